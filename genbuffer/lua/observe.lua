-- Note when a list without `last_chunk_at` was last seen to change, for idle detection
-- where OBJECT IDLETIME is not available (an LFU eviction policy, the in-process Redis).
-- KEYS[1]  the chunks list
-- KEYS[2]  the meta hash
-- ARGV[1]  now, ISO 8601 UTC
-- ARGV[2]  TTL in seconds for a meta hash this creates, when the list has none
-- A length different from the one last seen means chunks arrived: `seen_at` moves to
-- now. A meta hash created here lives no longer than its list.
-- Returns `seen_at` (when the list last changed as far as genbuf saw), or false when
-- the list does not exist.
local length = redis.call('LLEN', KEYS[1])
if length == 0 then return false end
if tonumber(redis.call('HGET', KEYS[2], 'seen_length') or '-1') ~= length then
  local created = redis.call('EXISTS', KEYS[2]) == 0
  redis.call('HSET', KEYS[2], 'seen_length', length, 'seen_at', ARGV[1])
  if created then
    local ttl = redis.call('TTL', KEYS[1])
    redis.call('EXPIRE', KEYS[2], ttl > 0 and ttl or tonumber(ARGV[2]))
  end
  return ARGV[1]
end
return redis.call('HGET', KEYS[2], 'seen_at')
