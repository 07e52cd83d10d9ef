-- DELETE /topics/{topic}: forget a topic, as a state change through the partition's log. The
-- topic leaves the clocks hash (so its next event is judged as a new topic's, whatever its
-- clock was) and `latest`, and one delete entry in the log tells every aggregator (the
-- active one, standbys, a rebuild) to drop its windows, groups and alert instances when it
-- applies it, in order with the events: an event logged before this belongs to the deleted
-- topic, one logged after it to the new one. The aggregator's publish of the deletion
-- (publish_updates.lua) then drops what the broker keeps of the topic (its latest update
-- again, groups, series, checkpoint), atomically with "applied up to".
--
-- `deleted` records the entry, so that a round of idle ticks proposed by an aggregator that
-- had not applied it yet is not logged (append_ticks.lua): a tick carrying the old clock
-- would lock the topic again.
--
-- KEYS: log, clocks, latest, logged, deleted, names (`latest`'s topics, sorted)
-- ARGV: topic, wake_channel ('', or on a Redis Cluster the partition's channel to SPUBLISH an
--       empty message on once the entry is logged, as append_events.lua does)
-- Returns the delete entry's id, or false (nothing changed) when the partition keeps no
-- such topic.
local log_key, clocks_key, latest_key = KEYS[1], KEYS[2], KEYS[3]
local logged_key, deleted_key, names_key = KEYS[4], KEYS[5], KEYS[6]
local topic, wake_channel = ARGV[1], ARGV[2]

if not redis.call('HGET', clocks_key, topic) then
  return false
end
redis.call('HDEL', clocks_key, topic)
redis.call('HDEL', latest_key, topic)
redis.call('ZREM', names_key, topic)
-- `n`: the entry's number in the log (1 for the first ever), so that a reader can tell
-- entries it never read were trimmed (a gap in the numbers): `Entry.n`.
local n = redis.call('INCR', logged_key)
local id = redis.call('XADD', log_key, '*', 'n', n, 'k', 'd', 't', topic)
redis.call('HSET', deleted_key, topic, id)
if wake_channel ~= '' then
  redis.call('SPUBLISH', wake_channel, '')
end
return id
