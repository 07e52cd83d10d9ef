-- The active aggregator logs idle ticks: topic clocks moved forward by wall time. Logging
-- them (instead of applying them directly) keeps the log the one source of every state
-- change, so a standby or a restarted aggregator reaches exactly the same windows.
--
-- KEYS: log, clocks, logged, lease
-- ARGV: lease token, payload, then topic, clock_key for each ticked topic
-- Returns the entry id, or an error when the caller no longer holds the lease.
if redis.call('GET', KEYS[4]) ~= ARGV[1] then
  return redis.error_reply('FENCED the lease is held by another aggregator')
end
for i = 3, #ARGV, 2 do
  local topic, clock = ARGV[i], ARGV[i + 1]
  local current = redis.call('HGET', KEYS[2], topic)
  if not current or clock > current then
    redis.call('HSET', KEYS[2], topic, clock)
  end
end
local id = redis.call('XADD', KEYS[1], '*', 'k', 't', 'v', ARGV[2])
redis.call('INCR', KEYS[3])
return id
