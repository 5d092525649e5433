-- Take a consistent snapshot of a buffer for compaction.
-- KEYS[1]  chunks_key: the chunks list
-- KEYS[2]  state_key: the meta hash; on a Redis Cluster, for an untagged list, genbuf's own hash
--          {K}:genbuf in the list's slot (the app's meta hash is then read before
--          this script and its counter comes in ARGV[9])
-- ARGV[1]  new_stream_id: a fresh stream id, stored when the meta hash has none yet
-- ARGV[2]  lease: lease in seconds: a key that would expire sooner is extended to it,
--          so nothing expires while it is being compacted
-- ARGV[3]  ttl: TTL in seconds for a meta hash that has none
-- ARGV[4]  held_stream: the stream id the row records, or ''
-- ARGV[5]  held: how many chunks of that stream the row holds
-- ARGV[6]  page: page size: the first page of chunks not yet held comes back with the snapshot
-- ARGV[7]  mode: '1' for a read-only snapshot (a dry run): nothing is written, no stream id
--          is given, no TTL is touched; `trimmed` is corrected in the reply only
-- ARGV[8]  window: n: how many of the row's last persisted chunks to return (the window ending
--          at position ARGV[5]), so that compaction can check the buffer still holds
--          them: located by the meta hash's `trimmed` for the row's stream
-- ARGV[9]  counter: the producer's chunk_count read from the app's meta hash before this script
--          ('' to read it from KEYS[2]; '-' when that meta hash has none)
-- ARGV[10] meta_hash: '1' when the app's meta hash (read before) exists, else '0'
-- ARGV[11] split_try: for a split list: '1' on a first try, '2' once a vanishing was confirmed
--          ('' otherwise). A first try returns {3, trimmed, stream id, TTL of KEYS[2]} when a deleted
--          life is not finished (`ended`: the meta hash may still count it), and {2}
--          when neither list nor genbuf's hash exists and the counter read before says
--          chunks vanished (it may be of a life deleted meanwhile: the caller reads the
--          meta hash again, then confirms), writing nothing in either case
-- ARGV[12…] shifts: for another stream (a meta hash that vanished while its list lived on): the
--          `trimmed` values the lost meta hash may have had; one window for each
-- The stream id tells one life of the buffer from the next: after a --delete,
-- chunks pushed again start a new stream, counted from 0.
-- Chunks that vanished from the head of the list (the list expired while the meta
-- hash lived on, or something popped them) are detected from chunk_count - trimmed
-- > length: `trimmed` moves past them so positions stay right, and `expired`
-- counts them; compaction reports them, never silently.
-- Returns {0} when neither key exists, else {1, list length, meta as a flat list,
-- first page of chunks from max(held, trimmed), absolute position of that page,
-- chunks vanished from the head that the meta hash does not count yet (read-only),
-- the windows of ARGV[8] chunks (empty where the list does not hold them)}.
-- A counter as stored: a non-negative integer of at most 15 digits (exact in Lua's
-- numbers), else nil, as for a field that is absent (text, 1e400, nan, -5 and 1.5
-- are no count a producer or genbuf writes: they must not stop a script for good)
local function whole(value)
  if type(value) ~= 'string' or #value > 15 or not string.match(value, '^%d+$') then
    return nil
  end
  return tonumber(value)
end
-- `trimmed` places every chunk: one that is not a count cannot be guessed (a wrong one
-- would skip or repeat chunks), so the snapshot stops, before it writes anything
local raw_trimmed = redis.call('HGET', KEYS[2], 'trimmed')
if raw_trimmed and not whole(raw_trimmed) then
  return redis.error_reply('snapshot.lua: trimmed of ' .. KEYS[2] .. ' is not a count: '
    .. string.sub(raw_trimmed, 1, 40))
end
local has_list = redis.call('EXISTS', KEYS[1]) == 1
-- read before the first write: a key of another type there (WRONGTYPE) stops the
-- script here, and a Lua error does not undo what ran before it
local length = redis.call('LLEN', KEYS[1])
local has_own = redis.call('EXISTS', KEYS[2]) == 1
local has_meta = has_own or ARGV[10] == '1'
if ARGV[11] == '1' and redis.call('HGET', KEYS[2], 'ended') then
  return {3, whole(raw_trimmed) or 0,
    redis.call('HGET', KEYS[2], 'stream_id') or '', redis.call('TTL', KEYS[2])}
end
if not has_list and not has_meta then return {0} end
local read_only = ARGV[7] == '1'
local lease = tonumber(ARGV[2])
if has_list and not read_only then
  redis.call('HSETNX', KEYS[2], 'stream_id', ARGV[1])
  local ttl = redis.call('TTL', KEYS[1])
  if ttl >= 0 and ttl < lease then redis.call('EXPIRE', KEYS[1], lease) end
end
-- Read apart, the counter can only lag the list: producers append before they count,
-- and it was read before the list (see genbuffer.redis.layout)
-- (a chunk_count that is not a count is no count: nothing is taken for vanished)
local count
if ARGV[9] == '' then
  count = whole(redis.call('HGET', KEYS[2], 'chunk_count')) or -1
else
  count = whole(ARGV[9]) or -1
end
local trimmed = whole(raw_trimmed) or 0
local vanished = 0
if count >= 0 and count - trimmed > length then
  if ARGV[11] == '1' and not has_list and not has_own then return {2} end
  vanished = count - trimmed - length
  if not read_only then
    redis.call('HSET', KEYS[2], 'expired',
      (whole(redis.call('HGET', KEYS[2], 'expired')) or 0) + vanished)
    redis.call('HSET', KEYS[2], 'trimmed', count - length)
    vanished = 0
  end
end
if not read_only then
  local list_ttl = redis.call('TTL', KEYS[1])
  local meta_ttl = redis.call('TTL', KEYS[2])
  if meta_ttl == -1 then
    redis.call('EXPIRE', KEYS[2], math.max(list_ttl, tonumber(ARGV[3])))
  elseif meta_ttl < math.max(list_ttl, lease) then
    redis.call('EXPIRE', KEYS[2], math.max(list_ttl, lease))
  end
end
local held = 0
local same = ARGV[4] ~= '' and (redis.call('HGET', KEYS[2], 'stream_id') or '') == ARGV[4]
if same then
  held = tonumber(ARGV[5])
end
trimmed = (whole(redis.call('HGET', KEYS[2], 'trimmed')) or 0) + vanished
local windows = {}
local wanted = tonumber(ARGV[8] or '0')
if wanted > 0 then
  local shifts = {}
  if same then
    shifts[1] = trimmed
  else
    for i = 12, #ARGV do shifts[#shifts + 1] = tonumber(ARGV[i]) end
  end
  for i, shift in ipairs(shifts) do
    local last = tonumber(ARGV[5]) - 1 - shift
    windows[i] = {}
    if last - wanted + 1 >= 0 then
      windows[i] = redis.call('LRANGE', KEYS[1], last - wanted + 1, last)
    end
  end
end
local first_at = math.max(held, trimmed)  -- absolute position of the page's first chunk
local first = first_at - trimmed
local page = {}
if tonumber(ARGV[6]) > 0 then  -- LRANGE first, first - 1 would be the whole list at 0
  page = redis.call('LRANGE', KEYS[1], first, first + tonumber(ARGV[6]) - 1)
  -- at most PAGE_BYTES (8 MiB) of it: a cap such as GENERATION_MAX_BYTES is then
  -- overshot by one page at most, whatever the chunks weigh
  local total = 0
  for i = 1, #page do
    total = total + #page[i]
    if total > 8388608 and i < #page then
      for j = #page, i + 1, -1 do page[j] = nil end
      break
    end
  end
end
return {1, length, redis.call('HGETALL', KEYS[2]), page, first_at, vanished, windows}
