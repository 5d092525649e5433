-- Count a failed compaction attempt; quarantine the buffer when the limit is reached.
-- KEYS[1]  the meta hash
-- ARGV[1]  the error, one line
-- ARGV[2]  the attempt limit (COMPACTION_MAX_ATTEMPTS)
-- ARGV[3]  now, ISO 8601 UTC
-- ARGV[4]  TTL in seconds for a meta hash that has none
-- Returns {attempts so far, 1 if the buffer is quarantined else 0}.
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'last_error', ARGV[1])
if redis.call('TTL', KEYS[1]) == -1 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
if attempts >= tonumber(ARGV[2]) then
  redis.call('HSETNX', KEYS[1], 'quarantined_at', ARGV[3])
  return {attempts, 1}
end
return {attempts, 0}
