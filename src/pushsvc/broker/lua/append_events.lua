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
-- An idempotency key (ARGV[6] non-empty) is checked first: when its key exists, the batch was
-- logged within the window by a request with this key, and nothing is appended: the same
-- digest answers that request's answer, another digest is refused. Otherwise the key is set,
-- with its window as expiry, only when the batch is logged - together with it.
--
-- KEYS: log, clocks, logged, then the optional keys ARGV says are given, in this order:
--       lease (when ARGV[5] is a token), idempotency key (when ARGV[6] is a digest)
-- ARGV: topic, payload, times: for each event its ts key then its limit key (ts + lateness),
--       19 characters each, concatenated (one argument, not two per event: packing thousands
--       of arguments cost the web process more than the script costs Redis), max_topics,
--       lease token or '', digest or '', answer to remember, window ms
-- Returns {1, entry id} when logged, {0, index of the late event, T} when late, {2, topics
-- kept} when the topic would be one too many, {3, answer} when the idempotency key was seen
-- with this digest, {4} when it was seen with another; an error when a lease is given and the
-- token is not its holder's (the Redis bridge: a bridge that lost its lease during a pause
-- must not append what its successor already did).
local token, digest = ARGV[5], ARGV[6]
local optional = 4
if token ~= '' then
  if redis.call('GET', KEYS[optional]) ~= token then
    return redis.error_reply('FENCED the lease is held by another bridge')
  end
  optional = optional + 1
end
local idempotency_key = digest ~= '' and KEYS[optional]
if idempotency_key then
  local seen = redis.call('GET', idempotency_key)
  if seen then
    if string.sub(seen, 1, #digest) == digest then
      return {3, string.sub(seen, #digest + 1)}
    end
    return {4}
  end
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
if idempotency_key then
  redis.call('SET', idempotency_key, digest .. ARGV[7], 'PX', ARGV[8])
end
return {1, id}
