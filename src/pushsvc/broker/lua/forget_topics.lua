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
--       set of checkpointed topics)
-- ARGV: lease token, position (entry id; '0-0' for none), most entries after it to scan,
--       groups key prefix, checkpoint key prefix,
--       then topic, clock_key for each proposed topic
-- Returns {entry id or false, {topics forgotten}}: false and nothing forgotten when no
-- topic qualifies or more than that many entries wait after the position (try again once
-- caught up); an error when the caller no longer holds the lease.
if redis.call('GET', KEYS[5]) ~= ARGV[1] then
  return redis.error_reply('FENCED the lease is held by another aggregator')
end
local limit = tonumber(ARGV[3])
local later = redis.call('XRANGE', KEYS[1], '(' .. ARGV[2], '+', 'COUNT', limit + 1)
if #later > limit then
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
for i = 6, #ARGV, 2 do
  local topic = ARGV[i]
  if not touched[topic] and redis.call('HGET', KEYS[2], topic) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[2], topic)
    redis.call('HDEL', KEYS[3], topic)
    redis.call('DEL', ARGV[4] .. topic, ARGV[5] .. topic)
    redis.call('SREM', KEYS[7], topic)
    forgotten[#forgotten + 1] = topic
  end
end
if #forgotten == 0 then
  return {false, {}}
end
local id = redis.call('XADD', KEYS[1], '*', 'k', 'f', 'v', cjson.encode(forgotten))
redis.call('INCR', KEYS[4])
redis.call('INCRBY', KEYS[6], #forgotten)
return {id, forgotten}
