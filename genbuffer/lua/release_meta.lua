-- After ack.lua deleted an untagged list on a Redis Cluster (genbuf's hash kept, marked
-- `ended`), take the deleted life's chunks off the app's meta hash (in its own slot):
-- delete it, or, when a producer already counted chunks of the next life, keep only
-- those. Idempotent per life: a second release of the same life changes nothing.
-- KEYS[1]  meta_key: the meta hash
-- ARGV[1]  life: chunks of the deleted life (ack.lua's fourth reply)
-- ARGV[2]  stream_id: the deleted life's stream id
-- Returns 1 if the meta hash was deleted, else 0.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[1], 'released') == ARGV[2] then return 0 end
local left = tonumber(redis.call('HGET', KEYS[1], 'chunk_count') or '0') - tonumber(ARGV[1])
if left <= 0 then
  redis.call('DEL', KEYS[1])
  return 1
end
redis.call('HSET', KEYS[1], 'chunk_count', left, 'released', ARGV[2])
redis.call('HDEL', KEYS[1], 'finished_at', 'bytes', 'first_chunk_at')
return 0
