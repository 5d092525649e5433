-- Count a failed compaction attempt; quarantine the buffer when the limit is reached.
-- KEYS[1]  state_key: the meta hash
-- KEYS[2]  chunks_key: the chunks list (given a TTL if it has none: a buffer set aside still expires)
-- ARGV[1]  error: the error, one line
-- ARGV[2]  limit: the attempt limit (COMPACTION_MAX_ATTEMPTS)
-- ARGV[3]  now: now, ISO 8601 UTC
-- ARGV[4]  ttl: TTL in seconds for a key that has none
-- ARGV[5]  set_aside: the field that sets the buffer aside at the limit: 'quarantined_at', or
--          'orphaned_at' for a buffer whose row does not exist (limit 1)
-- Returns {attempts so far, 1 if the buffer is set aside else 0}.
-- A counter as stored: a non-negative integer of at most 15 digits (exact in Lua's
-- numbers), else nil, as for a field that is absent (text, 1e400, nan, -5 and 1.5
-- are no count a producer or genbuf writes: they must not stop a script for good)
local function whole(value)
  if type(value) ~= 'string' or #value > 15 or not string.match(value, '^%d+$') then
    return nil
  end
  return tonumber(value)
end
local attempts = (whole(redis.call('HGET', KEYS[1], 'attempts')) or 0) + 1
redis.call('HSET', KEYS[1], 'attempts', attempts)
redis.call('HSET', KEYS[1], 'last_error', ARGV[1])
if redis.call('TTL', KEYS[1]) == -1 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
if redis.call('TTL', KEYS[2]) == -1 then redis.call('EXPIRE', KEYS[2], ARGV[4]) end
if attempts >= tonumber(ARGV[2]) then
  redis.call('HSETNX', KEYS[1], ARGV[5], ARGV[3])
  return {attempts, 1}
end
return {attempts, 0}
