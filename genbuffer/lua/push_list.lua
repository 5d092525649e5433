-- Append chunks to an untagged list on a Redis Cluster, whose meta hash lives in
-- another slot (genbuffer.redis.split): the list side of a push, counted afterwards.
-- KEYS[1]  chunks_key: the chunks list
-- KEYS[2]  state_key: genbuf's own hash beside it, {K}:genbuf (same slot)
-- ARGV[1]  ttl: TTL in seconds (the rules: genbuffer.redis.meta)
-- ARGV[2…] chunks: the chunks, in order
-- A push that creates the list starts a life of the buffer: its stream id, from the
-- start (as push.lua gives it), so that a replica's copy of this life is recognised.
-- Returns the list length.
local length = redis.call('RPUSH', KEYS[1], unpack(ARGV, 2))
if redis.call('TTL', KEYS[1]) == -1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
if length == #ARGV - 1 then
  local now = redis.call('TIME')
  redis.call('HSETNX', KEYS[2], 'stream_id', 't' .. now[1] .. now[2])
end
if redis.call('EXISTS', KEYS[2]) == 1 and redis.call('TTL', KEYS[2]) == -1 then
  redis.call('EXPIRE', KEYS[2], ARGV[1])
end
return length
