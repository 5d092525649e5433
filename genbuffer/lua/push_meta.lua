-- Count chunks already appended to an untagged list on a Redis Cluster (push_list.lua):
-- the meta hash side of a push, in its own slot, always after the list side.
-- KEYS[1]  meta_key: the meta hash
-- ARGV[1]  ttl: TTL in seconds (the rules: genbuffer.redis.meta)
-- ARGV[2]  now: now, ISO 8601 UTC
-- ARGV[3]  organization_id: organization id
-- ARGV[4]  scenario_id: scenario id, or ''
-- ARGV[5]  generation_id: generation id
-- ARGV[6]  appended: chunks appended
-- ARGV[7]  total_bytes: their length in bytes
-- ARGV[8]  list_created: '1' when the push created the list
-- Returns chunk_count.
local appended = tonumber(ARGV[6])
local count = redis.call('HINCRBY', KEYS[1], 'chunk_count', appended)
redis.call('HINCRBY', KEYS[1], 'bytes', ARGV[7])
redis.call('HSET', KEYS[1], 'last_chunk_at', ARGV[2])
if count == appended then
  redis.call('HSET', KEYS[1], 'first_chunk_at', ARGV[2], 'organization_id', ARGV[3],
    'generation_id', ARGV[5])
  if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'scenario_id', ARGV[4]) end
end
local ttl = redis.call('TTL', KEYS[1])
if ttl == -1 or (ARGV[8] == '1' and ttl < tonumber(ARGV[1])) then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return count
