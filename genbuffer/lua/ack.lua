-- Acknowledge chunks that a committed transaction holds: trim them off the head.
-- KEYS[1]  chunks_key: the chunks list
-- KEYS[2]  state_key: the meta hash (on a cluster, for an untagged list: {K}:genbuf, see snapshot.lua)
-- ARGV[1]  stream_id: the stream id the committed compaction read
-- ARGV[2]  persisted: absolute count of chunks of that stream now persisted
-- ARGV[3]  when_empty: '1' to delete both keys when no chunk is left, '0' to keep them
-- ARGV[4]  layout: '1' for a split list on a cluster: genbuf's hash is kept, marked `ended`,
--          until the app's meta hash has given up the life (release_meta.lua, then
--          drop_state.lua): a compaction that reads the meta hash meanwhile must not
--          take its count for chunks that vanished
-- Idempotent and monotonic: it trims only what lies below ARGV[2] and is still
-- there, so an older or repeated acknowledgement is a no-op.
-- Returns {chunks trimmed, 1 if the keys were deleted else 0, chunks left, chunks of
-- the stream trimmed in all, TTL of KEYS[2] marked `ended` (else -2)} (the fourth: what
-- the app's meta hash counted of a deleted life; the fifth: how long the release of that
-- life must be remembered, see release_meta.lua and genbuffer.redis.layout).
-- A counter as stored: a non-negative integer of at most 15 digits (exact in Lua's
-- numbers), else nil, as for a field that is absent (text, 1e400, nan, -5 and 1.5
-- are no count a producer or genbuf writes: they must not stop a script for good)
local function whole(value)
  if type(value) ~= 'string' or #value > 15 or not string.match(value, '^%d+$') then
    return nil
  end
  return tonumber(value)
end
if redis.call('HGET', KEYS[2], 'stream_id') ~= ARGV[1] then
  return {0, 0, redis.call('LLEN', KEYS[1]), 0, -2}
end
local raw_trimmed = redis.call('HGET', KEYS[2], 'trimmed')
local trimmed = whole(raw_trimmed) or 0
if raw_trimmed and not whole(raw_trimmed) then
  -- which chunks lie below ARGV[2] cannot be told: trim nothing (see snapshot.lua)
  return redis.error_reply('ack.lua: trimmed of ' .. KEYS[2] .. ' is not a count: '
    .. string.sub(raw_trimmed, 1, 40))
end
local length = redis.call('LLEN', KEYS[1])
local n = math.min(tonumber(ARGV[2]) - trimmed, length)
if n > 0 then
  redis.call('LTRIM', KEYS[1], n, -1)
  redis.call('HINCRBY', KEYS[2], 'trimmed', n)
else
  n = 0
end
local left = length - n
if ARGV[3] == '1' and left == 0 then
  -- the list is gone already: Redis deleted it as LTRIM emptied it (or it was empty).
  -- It is not named again: while its slot migrates, a node refuses a script's command
  -- on a key it does not hold (ASK, TRYAGAIN), and the script would stop here, halfway
  local ended = -2
  if ARGV[4] == '1' then
    redis.call('HSET', KEYS[2], 'ended', '1')
    ended = redis.call('TTL', KEYS[2])
  else
    redis.call('DEL', KEYS[2])
  end
  return {n, 1, 0, trimmed + n, ended}
end
return {n, 0, left, trimmed + n, -2}
