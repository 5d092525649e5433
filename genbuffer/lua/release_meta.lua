-- After ack.lua deleted an untagged list on a Redis Cluster (genbuf's hash kept, marked
-- `ended`), take the deleted life's chunks off the app's meta hash (in its own slot):
-- delete it, or, when a producer already counted chunks of the next life, keep only
-- those. Idempotent per life: a second release of the same life changes nothing. A
-- deleter killed after this call and before drop_state.lua leaves `ended` for the next
-- snapshot to finish, by releasing again: by then the app may have begun a next life in
-- a new meta hash, which must not give up the deleted life's chunks (a count too low,
-- a next life of as many chunks deleted whole). So a deleted meta hash leaves KEYS[2]
-- naming the life, for as long as genbuf's `ended` hash can ask (ARGV[3]).
-- KEYS[1]  meta_key: the meta hash
-- KEYS[2]  released_key: {KEYS[1]}:released, in its slot: the stream id of the life
--          whose release deleted the meta hash
-- ARGV[1]  life: chunks of the deleted life (ack.lua's fourth reply)
-- ARGV[2]  stream_id: the deleted life's stream id
-- ARGV[3]  remember: seconds KEYS[2] lives (longer than genbuf's `ended` hash)
-- Returns 1 if the meta hash was deleted, else 0.
-- A counter as stored: a non-negative integer of at most 15 digits (exact in Lua's
-- numbers), else nil, as for a field that is absent (text, 1e400, nan, -5 and 1.5
-- are no count a producer or genbuf writes: they must not stop a script for good)
local function whole(value)
  if type(value) ~= 'string' or #value > 15 or not string.match(value, '^%d+$') then
    return nil
  end
  return tonumber(value)
end
if redis.call('GET', KEYS[2]) == ARGV[2] then return 0 end  -- released: a hash is a next life's
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[1], 'released') == ARGV[2] then return 0 end
-- a count that is not one holds nothing of a next life: the meta hash goes
local left = (whole(redis.call('HGET', KEYS[1], 'chunk_count')) or 0) - tonumber(ARGV[1])
if left <= 0 then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
  return 1
end
redis.call('HSET', KEYS[1], 'chunk_count', left, 'released', ARGV[2])
redis.call('HDEL', KEYS[1], 'finished_at', 'bytes', 'first_chunk_at')
return 0
