-- The active aggregator saves its topics' checkpoints (core/checkpoint.py): each topic's
-- hash is replaced whole, so a rebuild reads one consistent state, and never by an older one
-- (a former holder that has not noticed it lost the lease is refused by the fence anyway).
--
-- KEYS: lease, checkpoints (the shard's set of checkpointed topics), then each topic's
--       checkpoint key, read by name from the prefix: declared so that a Redis Cluster whose
--       slot is half moved answers TRYAGAIN before the script starts, never a save that
--       stops partway (publish_updates.lua's header says why)
-- ARGV: lease token, checkpoint key prefix,
--       then for each topic: topic, position (ms), position (seq), number of fields F,
--       then F field names and F values, interleaved
-- Returns the number of checkpoints written; an error when the lease is not the caller's.
local lease_key, index_key = KEYS[1], KEYS[2]
local token, prefix = ARGV[1], ARGV[2]
if redis.call('GET', lease_key) ~= token then
  return redis.error_reply('FENCED the lease is held by another aggregator')
end
local written = 0
local i = 3
while i <= #ARGV do
  local topic, ms_text, seq_text = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local ms, seq, count = tonumber(ms_text), tonumber(seq_text), tonumber(ARGV[i + 3])
  local key = prefix .. topic
  local first = i + 4
  i = first + 2 * count
  local saved = redis.call('HMGET', key, 'ms', 'seq')
  local old_ms, old_seq = tonumber(saved[1]), tonumber(saved[2])
  if not old_ms or ms > old_ms or (ms == old_ms and seq > old_seq) then
    redis.call('DEL', key)
    redis.call('HSET', key, 'ms', ms_text, 'seq', seq_text)
    -- One pair per call: a group-heavy topic has more fields than Lua's unpack can take.
    for field = first, i - 1, 2 do
      redis.call('HSET', key, ARGV[field], ARGV[field + 1])
    end
    redis.call('SADD', index_key, topic)
    written = written + 1
  end
end
return written
