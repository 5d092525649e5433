-- The one push script: append chunks to a generation buffer and count them in its meta
-- hash. The meta fields and TTL rules (genbuffer.redis.meta) are written here only;
-- every push path runs this script, as the buffer's key layout says
-- (genbuffer.redis.layout). Where the list and its meta hash share a slot (one server,
-- or the hash-tagged template on a cluster) one call does both: step 'push'. An
-- untagged list on a Redis Cluster has its meta hash in another slot, so a push there
-- is two calls, the list first (step 'list': the stream id goes to genbuf's own hash
-- beside the list) and then the count (step 'count', given what the list step did).
-- Step 'rpushed' is the one-slot push of many chunks: they went as native RPUSHes
-- (converting each to a Lua string costs more) in the MULTI/EXEC that ends with this
-- call, which counts them and gives the TTLs, exactly as step 'push' would. Step
-- 'finish' marks the stream finished (`finished_at`), where the list or its meta hash
-- exists (a retried finish must not bring back a meta hash a compaction deleted).
-- KEYS[1]  chunks_key: the chunks list (step 'count': the meta hash again, as KEYS[2])
-- KEYS[2]  hash_key: the meta hash (step 'list': genbuf's own hash {K}:genbuf)
-- ARGV[1]  step: 'push', 'rpushed', 'list', 'count' or 'finish'
-- ARGV[2]  ttl: TTL in seconds
-- ARGV[3]  now: now, ISO 8601 UTC
-- ARGV[4]  organization_id: organization id
-- ARGV[5]  scenario_id: scenario id, or '' when there is none
-- ARGV[6]  generation_id: generation id
-- ARGV[7]  seq: sequence number (0-based, over the stream) of the first chunk, or '' (step 'push' only)
-- ARGV[8]  total_bytes: the chunks' total length in bytes (computed by the caller)
-- ARGV[9]  appended: steps 'count' and 'rpushed': chunks appended before ('' otherwise)
-- ARGV[10] list_length: steps 'count' and 'finish': the list's length, read apart ('' otherwise)
-- ARGV[11…] chunks: the chunks, in order (steps 'count' and 'rpushed': none)
-- With a sequence number the push is idempotent: the producer's next expected
-- number is seq_base + chunk_count + gaps; chunks below it are skipped (a retried
-- push), and a jump forward is added to `gaps` (chunks never delivered). chunk_count
-- only ever counts chunks really appended, so it stays equal to trimmed + list length.
-- `seq_base` is the sequence number the buffer's life began at: after a --delete the
-- stream goes on in a new buffer from where it was (the row knows how far it got, and
-- compaction skips what it already holds or reports what never came).
-- Returns {list length, chunks appended, chunks skipped}.
local step, ttl, now = ARGV[1], tonumber(ARGV[2]), ARGV[3]

-- Every argument is checked before the first write: a Lua error does not undo what ran
-- before it (a list left uncounted or without TTL), EXPIRE with 0 or less deletes the
-- key, and a number past 2^53 is no integer in Lua (a seq_base that skips every chunk).
local function malformed(index, least, digits, optional)
  local value = ARGV[index]
  if optional and value == '' then return nil end
  if type(value) ~= 'string' or not string.match(value, '^%d+$') or #value > digits
      or tonumber(value) < least then
    return 'push.lua: ARGV[' .. index .. '] is not an integer of at most ' .. digits
      .. ' digits, ' .. least .. ' or more: ' .. string.sub(tostring(value), 1, 40)
  end
  return nil
end
local problem = malformed(2, 1, 10) or (ttl > 4294967296 and 'push.lua: ttl over 2^32')
  or malformed(4, 1, 19) or malformed(5, 1, 19, true) or malformed(6, 1, 19)
  or malformed(7, 0, 15, true) or malformed(8, 0, 15, step == 'finish')
  or malformed(9, 0, 15, true)
  or malformed(10, 0, 15, true)
if problem then return redis.error_reply(problem) end
do
  -- KEYS[2] must be KEYS[1]'s meta hash (or genbuf's hash beside it): a call writes one
  -- buffer's keys only (which ids its list names is the caller's: a smoke test's key
  -- names none)
  local function is_meta(key) return string.sub(key, -5) == ':meta' end
  local fits
  if step == 'push' or step == 'rpushed' then
    fits = KEYS[2] == KEYS[1] .. ':meta'
  elseif step == 'list' then
    fits = KEYS[2] == '{' .. KEYS[1] .. '}:genbuf'
  elseif step == 'count' then
    fits = KEYS[1] == KEYS[2] and is_meta(KEYS[1])
  elseif step == 'finish' then
    fits = KEYS[2] == KEYS[1] .. ':meta' or (KEYS[1] == KEYS[2] and is_meta(KEYS[1])
      and ARGV[10] ~= '')
  else
    return redis.error_reply('push.lua: unknown step ' .. tostring(step))
  end
  if not fits then
    return redis.error_reply('push.lua: KEYS[2] is not the ' .. step .. ' hash of KEYS[1]')
  end
end

-- A counter as stored: a non-negative integer of at most 15 digits (exact in Lua's
-- numbers), else nil, as for a field that is absent (text, 1e400, nan, -5 and 1.5
-- are no count a producer or genbuf writes: they must not stop a script for good)
local function whole(value)
  if type(value) ~= 'string' or #value > 15 or not string.match(value, '^%d+$') then
    return nil
  end
  return tonumber(value)
end

-- TTL rule 1: a key without a TTL gets the configured one (nothing lives forever)
-- (true when it gave one)
local function give_ttl(key)
  if redis.call('TTL', key) == -1 then
    redis.call('EXPIRE', key, ttl)
    return true
  end
  return false
end

-- A life of the buffer has its stream id from the start, so that a replica's copy of
-- this life is recognised.
local function new_life(hash)
  local time = redis.call('TIME')
  redis.call('HSETNX', hash, 'stream_id', 't' .. time[1] .. time[2])
end

if step == 'finish' then
  local length = ARGV[10] == '' and redis.call('LLEN', KEYS[1]) or tonumber(ARGV[10])
  if length > 0 or redis.call('EXISTS', KEYS[2]) == 1 then
    redis.call('HSET', KEYS[2], 'finished_at', now)
    give_ttl(KEYS[2])
  end
  return {length, 0, 0}
end

-- The list's side: append (or take what was appended), and its TTL.
local appended, length, bytes, skipped = 0, 0, ARGV[8], 0
local gave_list_ttl = false
if step == 'count' then
  appended, length = tonumber(ARGV[9]), tonumber(ARGV[10])
elseif step == 'rpushed' then
  appended, length = tonumber(ARGV[9]), redis.call('LLEN', KEYS[1])
  gave_list_ttl = give_ttl(KEYS[1])
elseif step == 'push' or step == 'list' then
  local first = 11 -- ARGV index of the first chunk
  if ARGV[7] ~= '' then
    if step ~= 'push' then
      return redis.error_reply('push.lua: a sequenced push needs the list and its meta hash in one slot')
    end
    -- only sequenced pushes pay for reading the counters first
    local stored = redis.call('HMGET', KEYS[2], 'chunk_count', 'trimmed', 'seq_base', 'gaps')
    -- the base places every sequence number (it may be below 0): one that is not an
    -- integer cannot be guessed (a wrong one skips or repeats chunks), so the push
    -- stops before it writes
    local digits = stored[3] and string.match(stored[3], '^-?(%d+)$')
    if stored[3] and (not digits or #digits > 15) then
      return redis.error_reply('push.lua: seq_base of ' .. KEYS[2] .. ' is not an integer: '
        .. string.sub(stored[3], 1, 40))
    end
    local counted = whole(stored[1]) or 0
    local seq = tonumber(ARGV[7])
    -- the stream's positions so far: what was counted, or (a meta hash recreated while
    -- its list lived on) what the list holds
    local held = math.max(counted, (whole(stored[2]) or 0) + redis.call('LLEN', KEYS[1]))
    local base = tonumber(stored[3] or '0')
    if counted == 0 and redis.call('HSETNX', KEYS[2], 'seq_base', seq - held) == 1 then
      base = seq - held
    end
    local gaps = whole(stored[4]) or 0
    local expected = base + held + gaps
    if seq < expected then
      skipped = math.min(expected - seq, #ARGV - first + 1)
      first = first + skipped
    elseif seq > expected then
      redis.call('HSET', KEYS[2], 'gaps', gaps + seq - expected)
    end
  end
  appended = #ARGV - first + 1
  if appended <= 0 then
    return {redis.call('LLEN', KEYS[1]), 0, skipped}
  end
  if skipped > 0 then
    -- a retried batch: count only the bytes of the chunks really appended
    bytes = 0
    for i = first, #ARGV do bytes = bytes + string.len(ARGV[i]) end
  end
  length = redis.call('RPUSH', KEYS[1], unpack(ARGV, first))
  gave_list_ttl = give_ttl(KEYS[1])
  if step == 'list' then
    -- genbuf's own hash beside a split list: a new list is a new life; a TTL like the list's
    if length == appended then new_life(KEYS[2]) end
    give_ttl(KEYS[2]) -- a no-op where it does not exist
    return {length, appended, 0}
  end
else
  return redis.error_reply('push.lua: unknown step ' .. tostring(step))
end

-- The meta hash's side: counters, the ids and start of a new count, and its TTL.
-- A counter that is not a count (a producer's bug, a hand edit) would make HINCRBY
-- fail after the chunks went in, at every push from then on: it is counted again
-- instead, chunk_count from what the list holds (trimmed + length, as it always
-- stays; beside a split list `trimmed` is in genbuf's hash, so it may count less,
-- which compaction never takes for chunks that vanished). HINCRBY is tried first (a
-- refused one changes nothing): the usual push pays nothing more. HINCRBY also takes
-- a counter of 16 to 19 digits, which is no count either (past 15): counted again too.
local most = 999999999999999 -- the largest count of at most 15 digits (see whole)
local counted = redis.pcall('HINCRBY', KEYS[2], 'chunk_count', appended)
if type(counted) == 'table' then
  -- Another type of value where the meta hash goes (a key no producer of buffers
  -- wrote): the chunks cannot be counted. Steps 'push' and 'rpushed' take them back,
  -- as nobody can have read them yet (this call and the RPUSHes before it run as one).
  local kind = redis.call('TYPE', KEYS[2])['ok']
  if kind ~= 'hash' and kind ~= 'none' then
    local what = ': the chunks were appended, not counted'
    if step ~= 'count' then
      if length == appended then
        redis.call('DEL', KEYS[1])
      else
        redis.call('LTRIM', KEYS[1], 0, -appended - 1)
        if gave_list_ttl then redis.call('PERSIST', KEYS[1]) end
      end
      what = ': nothing was appended'
    end
    return redis.error_reply('WRONGTYPE push.lua: ' .. KEYS[2] .. ' holds a ' .. kind
      .. ', not a meta hash' .. what)
  end
end
if type(counted) == 'table' or counted < appended or counted > most then
  counted = (whole(redis.call('HGET', KEYS[2], 'trimmed')) or 0) + length
  redis.call('HSET', KEYS[2], 'chunk_count', counted)
end
local total = redis.pcall('HINCRBY', KEYS[2], 'bytes', bytes)
if type(total) == 'table' or total < tonumber(bytes) or total > most then
  redis.call('HSET', KEYS[2], 'bytes', bytes)
end
redis.call('HSET', KEYS[2], 'last_chunk_at', now)
if counted == appended then
  redis.call('HSET', KEYS[2], 'first_chunk_at', now, 'organization_id', ARGV[4],
    'generation_id', ARGV[6])
  if ARGV[5] ~= '' then redis.call('HSET', KEYS[2], 'scenario_id', ARGV[5]) end
  -- one slot: genbuf's fields are in the meta hash (a split list's: in {K}:genbuf)
  if step ~= 'count' then new_life(KEYS[2]) end
end
-- TTL rules 1 and 2: a push that creates the list raises the meta hash's TTL to at
-- least the configured one; rule 3: nothing else is refreshed (abandoned streams expire)
local left = redis.call('TTL', KEYS[2])
if left == -1 or (length == appended and left < ttl) then redis.call('EXPIRE', KEYS[2], ttl) end
return {length, appended, skipped}
