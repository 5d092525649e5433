-- Record a compactor's look at a buffer, for the idle rule (genbuffer.engine.idleness):
-- how many chunks this life of the buffer held (`trimmed` + the list's length: a
-- trim moves one to the other, every push raises it) and when genbuf first saw that
-- many. Written by compactors only (compact-pending, the worker's sweeper), never by
-- a read-only command, so that nothing a reader does changes what they decide.
-- KEYS[1]  chunks_key: the chunks list
-- KEYS[2]  state_key: the buffer's state hash: the meta hash, or beside a split list on a
--          cluster genbuf's own {K}:genbuf (in the list's slot)
-- ARGV[1]  now: now, ISO 8601 UTC
-- ARGV[2]  ttl: TTL in seconds for a state hash this creates, when the list has none
-- A count different from the one recorded means chunks arrived: `seen_at` moves to
-- now and `seen_first` is '0' (a change genbuf saw); the first look at a buffer
-- records `seen_first` '1' (no change seen yet). A hash created here lives no
-- longer than its list.
-- Returns {seen_at, seen_first, seen_end} as they now stand, or false when the list
-- does not exist.
-- A counter as stored: a non-negative integer of at most 15 digits (exact in Lua's
-- numbers), else nil, as for a field that is absent (text, 1e400, nan, -5 and 1.5
-- are no count a producer or genbuf writes: they must not stop a script for good)
local function whole(value)
  if type(value) ~= 'string' or #value > 15 or not string.match(value, '^%d+$') then
    return nil
  end
  return tonumber(value)
end
local length = redis.call('LLEN', KEYS[1])
if length == 0 then return false end
local stored = redis.call('HMGET', KEYS[2], 'trimmed', 'seen_end', 'seen_at', 'seen_first')
local ends = (whole(stored[1]) or 0) + length
if stored[3] and whole(stored[2]) == ends then
  return {stored[3], stored[4] or '0', ends}
end
local first = stored[3] and '0' or '1'
local created = redis.call('EXISTS', KEYS[2]) == 0
redis.call('HSET', KEYS[2], 'seen_end', ends, 'seen_at', ARGV[1], 'seen_first', first)
if created then
  local ttl = redis.call('TTL', KEYS[1])
  redis.call('EXPIRE', KEYS[2], ttl > 0 and ttl or tonumber(ARGV[2]))
end
return {ARGV[1], first, ends}
