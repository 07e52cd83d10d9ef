-- Append one batch of a topic's events to its shard's event log, if none is late.
--
-- The lateness rule is pushsvc/events/lateness.py's, decided here against the topic clock
-- so that no two appends can race: an event is late when ts + lateness < T, where T is the
-- largest event time (or tick clock) logged for the topic; each event of the batch moves T
-- for the ones after it. Times arrive as fixed-width decimal keys (see broker/redis/keys.py)
-- so that comparing strings compares the 64-bit integers exactly (Lua numbers are doubles).
--
-- The clocks hash is also the set of topics the deployment keeps: a batch for a topic it
-- does not hold (new, or forgotten: forget_topics.lua) is refused when it holds max_topics.
--
-- KEYS: log, clocks, logged[, lease]
-- ARGV: topic, payload, times: for each event its ts key then its limit key (ts + lateness),
--       19 characters each, concatenated (one argument, not two per event: packing thousands
--       of arguments cost the web process more than the script costs Redis), max_topics
--       [, lease token]
-- Returns {1, entry id} when logged, {0, index of the late event, T} when late, {2, topics
-- kept} when the topic would be one too many; an error when a lease is given and the token
-- is not its holder's (the Redis bridge: a bridge that lost its lease during a pause must
-- not append what its successor already did).
if KEYS[4] and redis.call('GET', KEYS[4]) ~= ARGV[5] then
  return redis.error_reply('FENCED the lease is held by another bridge')
end
local topic, times = ARGV[1], ARGV[3]
local clock = redis.call('HGET', KEYS[2], topic)
if not clock then
  local kept = redis.call('HLEN', KEYS[2])
  if kept >= tonumber(ARGV[4]) then
    return {2, kept}
  end
end
for at = 1, #times, 38 do
  local ts, limit = string.sub(times, at, at + 18), string.sub(times, at + 19, at + 37)
  if not clock or ts > clock then
    clock = ts
  elseif limit < clock then
    return {0, (at - 1) / 38, clock}
  end
end
redis.call('HSET', KEYS[2], topic, clock)
local id = redis.call('XADD', KEYS[1], '*', 'k', 'e', 't', topic, 'v', ARGV[2])
redis.call('INCR', KEYS[3])
return {1, id}
