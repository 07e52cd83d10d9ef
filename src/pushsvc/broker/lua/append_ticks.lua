-- The active aggregator logs idle ticks: topic clocks moved forward by wall time. Logging
-- them (instead of applying them directly) keeps the log the one source of every state
-- change, so a standby or a restarted aggregator reaches exactly the same windows.
--
-- KEYS: log, clocks, logged, lease
-- ARGV: lease_token, payload, then topic, clock_key for each ticked topic
-- Returns the entry id, or an error when the caller no longer holds the lease.
local log_key, clocks_key, logged_key, lease_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local lease_token, payload = ARGV[1], ARGV[2]
local FIRST_TICK = 3  -- ARGV's first topic; a clock_key follows each

if redis.call('GET', lease_key) ~= lease_token then
  return redis.error_reply('FENCED the lease is held by another aggregator')
end
for i = FIRST_TICK, #ARGV, 2 do
  local topic, clock = ARGV[i], ARGV[i + 1]
  local current = redis.call('HGET', clocks_key, topic)
  if not current or clock > current then
    redis.call('HSET', clocks_key, topic, clock)
  end
end
local id = redis.call('XADD', log_key, '*', 'k', 't', 'v', payload)
redis.call('INCR', logged_key)
return id
