-- The last step of deleting an untagged list's life on a Redis Cluster: once the app's
-- meta hash has given the life up (release_meta.lua), drop genbuf's hash of it.
-- KEYS[1]  state_key: genbuf's hash, {K}:genbuf
-- ARGV[1]  stream_id: the deleted life's stream id
-- Returns 1 if the hash was dropped.
if redis.call('HGET', KEYS[1], 'ended') == '1'
    and redis.call('HGET', KEYS[1], 'stream_id') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
