-- Append one batch of a topic's events to its shard's event log, if none is late.
--
-- The lateness rule is pushsvc/events/lateness.py's, decided here against the topic clock
-- so that no two appends can race: an event is late when ts + lateness < T, where T is the
-- largest event time (or tick clock) logged for the topic; each event of the batch moves T
-- for the ones after it. Times arrive as fixed-width decimal keys (see broker/redis/keys.py)
-- so that comparing strings compares the 64-bit integers exactly (Lua numbers are doubles).
--
-- KEYS: log, clocks, logged
-- ARGV: topic, payload, then ts_key, limit_key (ts + lateness) for each event
-- Returns {1, entry id} when logged, {0, index of the late event, T} when not.
local topic = ARGV[1]
local clock = redis.call('HGET', KEYS[2], topic)
for i = 3, #ARGV, 2 do
  local ts, limit = ARGV[i], ARGV[i + 1]
  if not clock or ts > clock then
    clock = ts
  elseif limit < clock then
    return {0, (i - 3) / 2, clock}
  end
end
redis.call('HSET', KEYS[2], topic, clock)
local id = redis.call('XADD', KEYS[1], '*', 'k', 'e', 't', topic, 'v', ARGV[2])
redis.call('INCR', KEYS[3])
return {1, id}
