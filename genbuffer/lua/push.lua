-- Append chunks to a generation buffer and update its meta hash, atomically.
-- KEYS[1]  chunks_key: the chunks list
-- KEYS[2]  meta_key: the meta hash
-- ARGV[1]  ttl: TTL in seconds (the rules: genbuffer.redis.meta)
-- ARGV[2]  now: now, ISO 8601 UTC
-- ARGV[3]  organization_id: organization id
-- ARGV[4]  scenario_id: scenario id, or '' when there is none
-- ARGV[5]  generation_id: generation id
-- ARGV[6]  seq: sequence number (0-based, counted over the stream) of the first chunk, or ''
-- ARGV[7]  total_bytes: the total length in bytes of the chunks (computed by the caller)
-- ARGV[8…] chunks: the chunks, in order
-- With a sequence number the push is idempotent: the producer's next expected
-- number is seq_base + chunk_count + gaps; chunks below it are skipped (a retried
-- push), and a jump forward is added to `gaps` (chunks never delivered). chunk_count
-- only ever counts chunks really appended, so it stays equal to trimmed + list length.
-- `seq_base` is the sequence number the buffer's life began at: after a --delete the
-- stream goes on in a new buffer from where it was (the row knows how far it got, and
-- compaction skips what it already holds or reports what never came).
-- Returns {list length, chunks appended, chunks skipped}.
local first = 8
local skipped = 0
if ARGV[6] ~= '' then
  -- only sequenced pushes pay for reading the counters first
  local count = tonumber(redis.call('HGET', KEYS[2], 'chunk_count') or '0')
  local seq = tonumber(ARGV[6])
  -- the stream's positions so far: what was counted, or (a meta hash recreated while
  -- its list lived on) what the list holds
  local held = math.max(count,
    tonumber(redis.call('HGET', KEYS[2], 'trimmed') or '0') + redis.call('LLEN', KEYS[1]))
  if count == 0 then redis.call('HSETNX', KEYS[2], 'seq_base', seq - held) end
  local base = tonumber(redis.call('HGET', KEYS[2], 'seq_base') or '0')
  local expected = base + held + tonumber(redis.call('HGET', KEYS[2], 'gaps') or '0')
  if seq < expected then
    skipped = math.min(expected - seq, #ARGV - first + 1)
    first = first + skipped
  elseif seq > expected then
    redis.call('HINCRBY', KEYS[2], 'gaps', seq - expected)
  end
end
local appended = #ARGV - first + 1
if appended <= 0 then
  return {redis.call('LLEN', KEYS[1]), 0, skipped}
end
local bytes = tonumber(ARGV[7])
if skipped > 0 then
  -- a retried batch: count only the bytes of the chunks really appended
  bytes = 0
  for i = first, #ARGV do bytes = bytes + string.len(ARGV[i]) end
end
local length = redis.call('RPUSH', KEYS[1], unpack(ARGV, first))
local count = redis.call('HINCRBY', KEYS[2], 'chunk_count', appended)
redis.call('HINCRBY', KEYS[2], 'bytes', bytes)
redis.call('HSET', KEYS[2], 'last_chunk_at', ARGV[2])
if count == appended then
  -- the first chunks of this stream: its ids, its start, and the TTL on the meta hash;
  -- a stream id from the start, so that a replica's copy of this life is recognised
  local now = redis.call('TIME')
  redis.call('HSETNX', KEYS[2], 'stream_id', 't' .. now[1] .. now[2])
  redis.call('HSET', KEYS[2], 'first_chunk_at', ARGV[2], 'organization_id', ARGV[3],
    'generation_id', ARGV[5])
  if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], 'scenario_id', ARGV[4]) end
end
-- the TTL rules of genbuffer.redis.meta: a key without a TTL gets it; a push that
-- creates the list raises the meta hash's to at least it; nothing is refreshed
if redis.call('TTL', KEYS[1]) == -1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local meta_ttl = redis.call('TTL', KEYS[2])
if meta_ttl == -1 or (length == appended and meta_ttl < tonumber(ARGV[1])) then
  redis.call('EXPIRE', KEYS[2], ARGV[1])
end
return {length, appended, skipped}
