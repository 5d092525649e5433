-- After ack.lua deleted an untagged list and genbuf's hash on a Redis Cluster, take
-- the deleted life's chunks off the app's meta hash (in its own slot): delete it, or,
-- when a producer already counted chunks of the next life, keep only those.
-- KEYS[1]  the meta hash
-- ARGV[1]  chunks of the deleted life (ack.lua's fourth reply)
-- Returns 1 if the meta hash was deleted, else 0.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local left = tonumber(redis.call('HGET', KEYS[1], 'chunk_count') or '0') - tonumber(ARGV[1])
if left <= 0 then
  redis.call('DEL', KEYS[1])
  return 1
end
redis.call('HSET', KEYS[1], 'chunk_count', left)
redis.call('HDEL', KEYS[1], 'finished_at', 'bytes', 'first_chunk_at')
return 0
