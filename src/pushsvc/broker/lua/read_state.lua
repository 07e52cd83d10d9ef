-- What a starting aggregator of a shard needs, read at one instant: how far the log has
-- been applied, and every topic's latest update (its clock is the topic's window clock at
-- that point). The log up to `applied` then rebuilds the windows.
--
-- KEYS: applied, latest
-- Returns {applied entry id or false, entries applied or false, flat latest hash}.
local applied_key, latest_key = KEYS[1], KEYS[2]

return {
  redis.call('HGET', applied_key, 'id'),
  redis.call('HGET', applied_key, 'n'),
  redis.call('HGETALL', latest_key),
}
