-- The hot path: append one chunk without a sequence number (push.lua does the rest).
-- Kept apart from push.lua because a streaming producer calls it once per token:
-- no counter read first, the byte length computed by the caller, one integer back.
-- KEYS[1]  chunks_key: the chunks list
-- KEYS[2]  meta_key: the meta hash
-- ARGV[1]  chunk: the chunk
-- ARGV[2]  now: now, ISO 8601 UTC
-- ARGV[3]  chunk_bytes: the chunk's length in bytes
-- ARGV[4]  ttl: TTL in seconds (the rules: genbuffer.redis.meta)
-- ARGV[5]  organization_id: organization id
-- ARGV[6]  scenario_id: scenario id, or ''
-- ARGV[7]  generation_id: generation id
-- Returns the list length.
local length = redis.call('RPUSH', KEYS[1], ARGV[1])
local count = redis.call('HINCRBY', KEYS[2], 'chunk_count', 1)
redis.call('HINCRBY', KEYS[2], 'bytes', ARGV[3])
redis.call('HSET', KEYS[2], 'last_chunk_at', ARGV[2])
if count == 1 then
  local now = redis.call('TIME')  -- the stream id, from the start (see push.lua)
  redis.call('HSETNX', KEYS[2], 'stream_id', 't' .. now[1] .. now[2])
  redis.call('HSET', KEYS[2], 'first_chunk_at', ARGV[2], 'organization_id', ARGV[5],
    'generation_id', ARGV[7])
  if ARGV[6] ~= '' then redis.call('HSET', KEYS[2], 'scenario_id', ARGV[6]) end
end
-- the TTL rules (genbuffer.redis.meta), as in push.lua
if redis.call('TTL', KEYS[1]) == -1 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
local meta_ttl = redis.call('TTL', KEYS[2])
if meta_ttl == -1 or (length == 1 and meta_ttl < tonumber(ARGV[4])) then
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
return length
