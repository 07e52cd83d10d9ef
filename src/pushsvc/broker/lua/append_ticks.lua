-- The active aggregator logs idle ticks: topic clocks moved forward by wall time. Logging
-- them (instead of applying them directly) keeps the log the one source of every state
-- change, so a standby or a restarted aggregator reaches exactly the same windows.
--
-- The aggregator proposed the ticks from the log as applied up to `position`. A topic deleted
-- after that (delete_topic.lua records the entry in `deleted`) was not seen deleted: its tick
-- would bring the deleted clock back (in `clocks`, and in the windows of the topic's next
-- incarnation, which the tick entry would follow). Then nothing is logged; the next round
-- proposes afresh, once the deletion is applied.
--
-- KEYS: log, clocks, logged, lease, deleted
-- ARGV: lease_token, payload, position (the last entry the proposer applied, '0-0' for
--       none), then topic, clock_key for each ticked topic
-- Returns the entry id, false when a ticked topic was deleted after `position`, or an error
-- when the caller no longer holds the lease.
local log_key, clocks_key, logged_key, lease_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local deleted_key = KEYS[5]
local lease_token, payload, position = ARGV[1], ARGV[2], ARGV[3]
local FIRST_TICK = 4  -- ARGV's first topic; a clock_key follows each

if redis.call('GET', lease_key) ~= lease_token then
  return redis.error_reply('FENCED the lease is held by another aggregator')
end
-- Whether log entry id `a` comes after `b`: `<ms>-<seq>`, compared as a pair of integers.
local function past(a, b)
  local a_ms, a_seq = string.match(a, '^(%d+)-(%d+)$')
  local b_ms, b_seq = string.match(b, '^(%d+)-(%d+)$')
  if tonumber(a_ms) ~= tonumber(b_ms) then return tonumber(a_ms) > tonumber(b_ms) end
  return tonumber(a_seq) > tonumber(b_seq)
end
for i = FIRST_TICK, #ARGV, 2 do
  local deleted = redis.call('HGET', deleted_key, ARGV[i])
  if deleted and past(deleted, position) then
    return false
  end
end
for i = FIRST_TICK, #ARGV, 2 do
  local topic, clock = ARGV[i], ARGV[i + 1]
  local current = redis.call('HGET', clocks_key, topic)
  if not current or clock > current then
    redis.call('HSET', clocks_key, topic, clock)
  end
end
-- `n`: the entry's number in the log (1 for the first ever), so that a reader can tell
-- entries it never read were trimmed (a gap in the numbers): `Entry.n`.
local n = redis.call('INCR', logged_key)
local id = redis.call('XADD', log_key, '*', 'n', n, 'k', 't', 'v', payload)
return id
