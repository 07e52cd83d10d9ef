-- Number a batch of update drafts, append them to the history, remember each topic's
-- latest update, keep the series points among them, record how far the partition's event log
-- has been applied, and PUBLISH them: one atomic step, so ids are in delivery order across
-- every publisher, and "applied up to" moves exactly with the updates and points it
-- produced (a standby continues where this stopped).
--
-- KEYS: epoch, history, latest, trimmed, applied, lease, alerts (active alert instances),
--       alerts_head (the newest alert change's `<epoch>:<stream id>`), checkpoints (the
--       partition's set of checkpointed topics), alert_changes (the alert changes again,
--       under the same ids, kept for their own retention), alert_changes_trimmed (the
--       newest id trimmed from it), names (the sorted set of `latest`'s topics, score 0,
--       which listings page through by name: kept with `latest`, field for field),
--       alert_keys (the sorted set of `alerts`' instance keys, score 0, likewise)
-- ARGV: epoch_candidate, history_len, channel_prefix (of the updates channels),
--       lease_token ('' publishes unfenced), applied_id ('' leaves it), applied_entries,
--       groups_prefix (of a topic's live groups hash), draft_count, point_count,
--       instance_count, applied_after (the entry the caller last saw published: the batch
--       continues from it), publish_command (PUBLISH, or SPUBLISH on a Redis Cluster: the
--       message then goes to the node of the partition's slot only), partition_channel ('',
--       or on a Redis Cluster the channel that also carries every run, after its topic and
--       a newline: patterns cannot be subscribed to there), series_keys_prefix and
--       checkpoint_prefix (of a topic's set of series keys and of its checkpoint),
--       deletion_count, alert_retention_ms (how long an alert change is kept in
--       alert_changes, whatever history_len keeps),
--       then topic, clock_us, body for each of the draft_count drafts,
--       then for each of the point_count drafts that are series points: its draft's place
--       (1 for the first draft), series key, stream id (`<bucket start ms>-0`), packed
--       point, min id (the oldest bucket start the tier keeps), key TTL in ms,
--       then for each of the instance_count drafts that are alert changes: its draft's place,
--       the instance's key, its JSON while active ('' once resolved: it leaves `alerts`),
--       then for each of the deletion_count drafts that are a topic's deletion: its place,
--       then topic, group id, group JSON ('' forgets the group) for each group they carry
--       (none of a draft that a deletion of its topic follows in the batch).
-- Returns {epoch, stream ids in draft order ('' for a point its series holds already: it
-- was published before and is not published again)}, or an error when the lease is not
-- the caller's (FENCED), or when the log is recorded as applied past `applied_after`
-- (PUBLISHED): some of the batch was published already, by this caller's own attempt whose
-- answer it never got (a dropped connection, a timeout) or by another holder, and nothing
-- is published twice. A recorded position behind `applied_after` (a failover lost the last
-- publishes) lets the batch through, as before.
--
-- Messages and `latest` values are `<id> <clock_us> <body>`: the receiver splices the id
-- into the body (pushsvc/core/updates.py owns the update JSON; this script never edits it).
-- A point or an alert is a message like an update, but never a topic's latest.
--
-- A deletion (DELETE /topics/{t}) is a message like an update too (its streams' `"gap": true`
-- snapshot), never a topic's latest: at its place among the drafts, the topic's latest
-- update, groups, checkpoint and series (every key its set of series keys names) are
-- dropped, and it starts no chain: the topic's next update is its first again, so a read of
-- the topic's history ends before the deletion.
--
-- Each history entry also names the stream id of its topic's previous update (`p`, '' for
-- none kept), so one topic's history is read by following them (topic_history.lua) instead
-- of scanning everyone's updates. Points are left out of that chain (a topic's history is its
-- updates; a stream's resume reads the whole history, points included). Alert changes, never
-- a topic's latest, chain from `alerts_head` instead.
local epoch_key, history_key, latest_key = KEYS[1], KEYS[2], KEYS[3]
local trimmed_key, applied_key, lease_key = KEYS[4], KEYS[5], KEYS[6]
local epoch_candidate = ARGV[1]
local history_len = tonumber(ARGV[2])
local channel_prefix, lease_token = ARGV[3], ARGV[4]
local applied_id, applied_entries = ARGV[5], ARGV[6]
local groups_prefix, draft_count = ARGV[7], tonumber(ARGV[8])
local point_count, instance_count = tonumber(ARGV[9]), tonumber(ARGV[10])
local applied_after, publish_command = ARGV[11], ARGV[12]
local partition_channel = ARGV[13]
local series_keys_prefix, checkpoint_prefix = ARGV[14], ARGV[15]
local deletion_count = tonumber(ARGV[16])
local alert_retention_ms = tonumber(ARGV[17])
local FIRST_DRAFT = 18  -- ARGV's first draft's topic; its clock_us and body follow
local LAST_DRAFT = FIRST_DRAFT + 3 * (draft_count - 1)
local FIRST_POINT = LAST_DRAFT + 3  -- the first point's draft place; its series args follow
local FIRST_INSTANCE = FIRST_POINT + 6 * point_count  -- an alert's draft place; key, JSON
local FIRST_DELETION = FIRST_INSTANCE + 3 * instance_count  -- a deletion's draft place
local FIRST_GROUP = FIRST_DELETION + deletion_count  -- the first group's topic; id, JSON
local alerts_key, alerts_head_key, checkpoints_key = KEYS[7], KEYS[8], KEYS[9]
local alert_changes_key, alert_changes_trimmed_key = KEYS[10], KEYS[11]
local names_key, alert_keys_key = KEYS[12], KEYS[13]

-- Draft place -> the ARGV index of its series arguments.
local point_at = {}
for i = FIRST_POINT, FIRST_INSTANCE - 1, 6 do
  point_at[tonumber(ARGV[i])] = i
end
local alert_at = {}
for i = FIRST_INSTANCE, FIRST_DELETION - 1, 3 do
  alert_at[tonumber(ARGV[i])] = i
end
local deletion_at = {}
for i = FIRST_DELETION, FIRST_GROUP - 1 do
  deletion_at[tonumber(ARGV[i])] = true
end

if lease_token ~= '' and redis.call('GET', lease_key) ~= lease_token then
  return redis.error_reply('FENCED the lease is held by another aggregator')
end
-- Whether log entry id `a` comes after `b`: `<ms>-<seq>`, compared as a pair of integers
-- (both fit a double exactly).
local function past(a, b)
  local a_ms, a_seq = string.match(a, '^(%d+)-(%d+)$')
  local b_ms, b_seq = string.match(b, '^(%d+)-(%d+)$')
  if tonumber(a_ms) ~= tonumber(b_ms) then return tonumber(a_ms) > tonumber(b_ms) end
  return tonumber(a_seq) > tonumber(b_seq)
end
if applied_id ~= '' then
  local recorded = redis.call('HGET', applied_key, 'id')
  if recorded and past(recorded, applied_after) then
    return redis.error_reply('PUBLISHED the log is applied up to ' .. recorded .. ', past '
      .. applied_after .. ' where this batch continues from')
  end
end
local epoch = redis.call('GET', epoch_key)
if not epoch or redis.call('EXISTS', history_key) == 0 then
  -- No epoch, or it outlived its history: whatever was there is lost, start a new one.
  epoch = epoch_candidate
  redis.call('SET', epoch_key, epoch)
  redis.call('DEL', latest_key, names_key, trimmed_key, alerts_head_key, alert_changes_key,
    alert_changes_trimmed_key)
end
if applied_id ~= '' then
  redis.call('HSET', applied_key, 'id', applied_id)
  redis.call('HINCRBY', applied_key, 'n', applied_entries)
end
-- The stream id of each topic's newest update in this epoch's history, '' for none.
local previous = {}
local function previous_of(topic, alert)
  local known = previous[topic]
  if known == nil then
    known = ''
    local latest
    if alert then
      latest = redis.call('GET', alerts_head_key)
    else
      latest = redis.call('HGET', latest_key, topic)
    end
    if latest then
      local of_epoch, id = string.match(latest, '^([^: ]+):([^ ]+)')
      if of_epoch == epoch then known = id end
    end
    previous[topic] = known
  end
  return known
end
local length = redis.call('XLEN', history_key)
local ids = {}
-- Consecutive updates of one topic (a batch POST) travel as one message: one PUBLISH,
-- one read and one hand-over per run in every web process, not one per update.
local run, run_topic, run_latest = {}, nil, nil
local function flush()
  if run_latest then
    redis.call('HSET', latest_key, run_topic, run_latest)
    redis.call('ZADD', names_key, 0, run_topic)
  end
  if #run > 0 then
    local message = table.concat(run, '\n')
    redis.call(publish_command, channel_prefix .. run_topic, message)
    if partition_channel ~= '' then
      redis.call(publish_command, partition_channel, run_topic .. '\n' .. message)
    end
  end
end
-- Keep an alert change for its retention, apart from the history that every topic's
-- updates share (a busy server turns that over in seconds): a chart of the last hours shades
-- every period in them. Trimmed by stream id (the time Redis wrote the change) as changes
-- come, remembering the newest id trimmed, so that a read after an older id knows it missed
-- some (no expiry: a quiet partition keeps its last changes, a few entries).
local function keep_alert_change(id, clock, body)
  redis.call('XADD', alert_changes_key, id, 'c', clock, 'b', body)
  local ms = tonumber(string.match(id, '^(%d+)'))
  local oldest_kept = string.format('%.0f', math.max(0, ms - alert_retention_ms))
  local gone = redis.call('XREVRANGE', alert_changes_key, '(' .. oldest_kept .. '-0', '-',
    'COUNT', 1)
  if #gone > 0 then
    redis.call('SET', alert_changes_trimmed_key, gone[1][1])
    redis.call('XTRIM', alert_changes_key, 'MINID', oldest_kept .. '-0')
  end
end
-- Keep a point in its tier's stream; false when the stream has it already (a bucket is
-- closed once: its start only grows), which XADD refuses as an id not above the top.
-- The topic's set of series keys (what its deletion drops) names the point's, and expires
-- with the longest-kept of them.
local function keep_point(at, topic)
  local series_key, point_id, packed = ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
  local added = redis.pcall('XADD', series_key, point_id, 'p', packed)
  if type(added) == 'table' and added.err then
    if string.find(added.err, 'equal or smaller', 1, true) then return false end
    return error(added)  -- anything else (OOM...) fails the script as redis.call would
  end
  redis.call('XTRIM', series_key, 'MINID', ARGV[at + 4])
  local ttl = tonumber(ARGV[at + 5])
  redis.call('PEXPIRE', series_key, ttl)
  local index_key = series_keys_prefix .. topic
  redis.call('SADD', index_key, series_key)
  if redis.call('PTTL', index_key) < ttl then
    redis.call('PEXPIRE', index_key, ttl)
  end
  return true
end
-- Everything the broker keeps of a deleted topic but its history.
local function drop_topic(topic)
  redis.call('HDEL', latest_key, topic)
  redis.call('ZREM', names_key, topic)
  redis.call('DEL', groups_prefix .. topic, checkpoint_prefix .. topic)
  redis.call('SREM', checkpoints_key, topic)
  local index_key = series_keys_prefix .. topic
  for _, series_key in ipairs(redis.call('SMEMBERS', index_key)) do
    redis.call('DEL', series_key)
  end
  redis.call('DEL', index_key)
end
local place = 0
for i = FIRST_DRAFT, LAST_DRAFT, 3 do
  place = place + 1
  local topic, clock, body = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local point = point_at[place]
  if point and not keep_point(point, topic) then
    ids[#ids + 1] = ''
  else
    local alert = alert_at[place]
    local deletion = deletion_at[place]
    if deletion then
      drop_topic(topic)
      previous[topic] = ''
      if run_topic == topic then run_latest = nil end
    end
    local id = redis.call('XADD', history_key, '*', 't', topic, 'c', clock, 'b', body,
      'p', previous_of(topic, alert))
    if alert then
      redis.call('SET', alerts_head_key, epoch .. ':' .. id)
      keep_alert_change(id, clock, body)
      if ARGV[alert + 2] == '' then
        redis.call('HDEL', alerts_key, ARGV[alert + 1])
        redis.call('ZREM', alert_keys_key, ARGV[alert + 1])
      else
        redis.call('HSET', alerts_key, ARGV[alert + 1], ARGV[alert + 2])
        redis.call('ZADD', alert_keys_key, 0, ARGV[alert + 1])
      end
    end
    if not point and not deletion then previous[topic] = id end
    if run_topic ~= topic then
      if run_topic then flush() end
      run, run_topic, run_latest = {}, topic, nil
    end
    local message = epoch .. ':' .. id .. ' ' .. clock .. ' ' .. body
    run[#run + 1] = message
    if not point and not alert and not deletion then run_latest = message end
    ids[#ids + 1] = id
    length = length + 1
  end
end
if run_topic then flush() end
-- Each grouping topic's live groups as of these updates (what a snapshot shows), marked with
-- the epoch: a group written in a lost history is not live.
for i = FIRST_GROUP, #ARGV, 3 do
  local groups_key, group_id, group_json = groups_prefix .. ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if group_json == '' then
    redis.call('HDEL', groups_key, group_id)
  else
    redis.call('HSET', groups_key, group_id, epoch .. ' ' .. group_json)
  end
end
if length > history_len then
  local gone = redis.call('XRANGE', history_key, '-', '+', 'COUNT', length - history_len)
  redis.call('SET', trimmed_key, gone[#gone][1])
  redis.call('XTRIM', history_key, 'MAXLEN', '=', history_len)
end
return {epoch, ids}
