-- Read a page of chunks by absolute position in the stream.
-- KEYS[1]  the chunks list
-- KEYS[2]  the meta hash
-- ARGV[1]  the stream id the snapshot saw
-- ARGV[2]  absolute position of the first chunk wanted (0-based over the stream)
-- ARGV[3]  absolute position of the last chunk wanted (inclusive)
-- `trimmed` in the meta hash counts the chunks already removed from the head,
-- so positions stay valid while another compactor acknowledges concurrently.
-- Returns the chunks, or an error when the stream changed or the page was trimmed.
if redis.call('HGET', KEYS[2], 'stream_id') ~= ARGV[1] then
  return redis.error_reply('GENBUF_STREAM_CHANGED')
end
local trimmed = tonumber(redis.call('HGET', KEYS[2], 'trimmed') or '0')
local first = tonumber(ARGV[2]) - trimmed
if first < 0 then return redis.error_reply('GENBUF_STREAM_CHANGED') end
return redis.call('LRANGE', KEYS[1], first, tonumber(ARGV[3]) - trimmed)
