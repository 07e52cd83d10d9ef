-- The active aggregator forgets idle topics (--topic-ttl): each proposed topic leaves the
-- clocks hash (so it no longer counts against --max-topics, and its next event finds it
-- new) and `latest`, and one forget entry in the shard's log tells every aggregator (this
-- one, standbys, a rebuild) to drop its windows. Logging it keeps the log the one source of
-- every state change, like idle ticks (append_ticks.lua).
--
-- A topic is forgotten only if nothing was logged for it since the proposer's view: its
-- clock is still the one the proposer saw, and no entry after the proposer's position (the
-- last entry it applied) names it. The second check matters: an event within the allowed
-- lateness does not move the clock. So a POST racing the forget is either logged first (and
-- the forget is cancelled) or after the forget entry (and it starts the topic afresh).
--
-- A forgotten topic's live groups and checkpoint go with it.
--
-- KEYS: log, clocks, latest, logged, lease, forgotten (a counter), checkpoints (the shard's
--       set of checkpointed topics), names (`latest`'s topics, sorted), then each proposed
--       topic's groups and checkpoint keys, named by the prefixes: declared so that a Redis
--       Cluster whose slot is half moved answers TRYAGAIN before the script starts, never a
--       forget that stops partway (publish_updates.lua's header says why)
-- ARGV: lease_token, position (entry id; '0-0' for none), scan_limit (most entries after it
--       to scan), groups_prefix, checkpoint_prefix (of the per-topic keys),
--       then topic, clock_key for each proposed topic
-- Returns {entry id or false, {topics forgotten}}: false and nothing forgotten when no
-- topic qualifies or more than scan_limit entries wait after the position (try again once
-- caught up); an error when the caller no longer holds the lease.
local log_key, clocks_key, latest_key = KEYS[1], KEYS[2], KEYS[3]
local logged_key, lease_key, forgotten_key = KEYS[4], KEYS[5], KEYS[6]
local checkpoints_key, names_key = KEYS[7], KEYS[8]
local lease_token, position = ARGV[1], ARGV[2]
local scan_limit = tonumber(ARGV[3])
local groups_prefix, checkpoint_prefix = ARGV[4], ARGV[5]
local FIRST_PROPOSED = 6  -- ARGV's first topic; a clock_key follows each

if redis.call('GET', lease_key) ~= lease_token then
  return redis.error_reply('FENCED the lease is held by another aggregator')
end
local later = redis.call('XRANGE', log_key, '(' .. position, '+', 'COUNT', scan_limit + 1)
if #later > scan_limit then
  return {false, {}}
end
local touched = {}
for _, entry in ipairs(later) do
  local fields = {}
  for i = 1, #entry[2], 2 do
    fields[entry[2][i]] = entry[2][i + 1]
  end
  if fields['k'] == 'e' then
    touched[fields['t']] = true
  elseif fields['k'] == 't' then
    for ticked in pairs(cjson.decode(fields['v'])) do
      touched[ticked] = true
    end
  end
end
local forgotten = {}
for i = FIRST_PROPOSED, #ARGV, 2 do
  local topic, seen_clock = ARGV[i], ARGV[i + 1]
  if not touched[topic] and redis.call('HGET', clocks_key, topic) == seen_clock then
    redis.call('HDEL', clocks_key, topic)
    redis.call('HDEL', latest_key, topic)
    redis.call('ZREM', names_key, topic)
    redis.call('DEL', groups_prefix .. topic, checkpoint_prefix .. topic)
    redis.call('SREM', checkpoints_key, topic)
    forgotten[#forgotten + 1] = topic
  end
end
if #forgotten == 0 then
  return {false, {}}
end
-- `n`: the entry's number in the log (1 for the first ever), so that a reader can tell
-- entries it never read were trimmed (a gap in the numbers): `Entry.n`.
local n = redis.call('INCR', logged_key)
local id = redis.call('XADD', log_key, '*', 'n', n, 'k', 'f', 'v', cjson.encode(forgotten))
redis.call('INCRBY', forgotten_key, #forgotten)
return {id, forgotten}
