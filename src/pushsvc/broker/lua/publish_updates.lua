-- Number a batch of update drafts, append them to the history, remember each topic's
-- latest update, record how far the shard's event log has been applied, and PUBLISH them:
-- one atomic step, so ids are in delivery order across every publisher, and "applied up
-- to" moves exactly with the updates it produced (a standby continues where this stopped).
--
-- KEYS: epoch, history, latest, trimmed, applied, lease
-- ARGV: epoch_candidate, history_len, channel_prefix (of the updates channels),
--       lease_token ('' publishes unfenced), applied_id ('' leaves it), applied_entries,
--       groups_prefix (of a topic's live groups hash), draft_count,
--       then topic, clock_us, body for each of the draft_count drafts,
--       then topic, group id, group JSON ('' forgets the group) for each group they carry.
-- Returns {epoch, stream ids in draft order}, or an error when the lease is not the caller's.
--
-- Messages and `latest` values are `<id> <clock_us> <body>`: the receiver splices the id
-- into the body (pushsvc/core/updates.py owns the update JSON; this script never edits it).
--
-- Each history entry also names the stream id of its topic's previous update (`p`, '' for
-- none kept), so one topic's history is read by following them (topic_history.lua) instead
-- of scanning everyone's updates.
local epoch_key, history_key, latest_key = KEYS[1], KEYS[2], KEYS[3]
local trimmed_key, applied_key, lease_key = KEYS[4], KEYS[5], KEYS[6]
local epoch_candidate = ARGV[1]
local history_len = tonumber(ARGV[2])
local channel_prefix, lease_token = ARGV[3], ARGV[4]
local applied_id, applied_entries = ARGV[5], ARGV[6]
local groups_prefix, draft_count = ARGV[7], tonumber(ARGV[8])
local FIRST_DRAFT = 9  -- ARGV's first draft's topic; its clock_us and body follow
local LAST_DRAFT = FIRST_DRAFT + 3 * (draft_count - 1)
local FIRST_GROUP = LAST_DRAFT + 3  -- the first group's topic; its id and JSON follow

if lease_token ~= '' and redis.call('GET', lease_key) ~= lease_token then
  return redis.error_reply('FENCED the lease is held by another aggregator')
end
local epoch = redis.call('GET', epoch_key)
if not epoch or redis.call('EXISTS', history_key) == 0 then
  -- No epoch, or it outlived its history: whatever was there is lost, start a new one.
  epoch = epoch_candidate
  redis.call('SET', epoch_key, epoch)
  redis.call('DEL', latest_key, trimmed_key)
end
if applied_id ~= '' then
  redis.call('HSET', applied_key, 'id', applied_id)
  redis.call('HINCRBY', applied_key, 'n', applied_entries)
end
-- The stream id of each topic's newest update in this epoch's history, '' for none.
local previous = {}
local function previous_of(topic)
  local known = previous[topic]
  if known == nil then
    known = ''
    local latest = redis.call('HGET', latest_key, topic)
    if latest then
      local of_epoch, id = string.match(latest, '^([^: ]+):([^ ]+) ')
      if of_epoch == epoch then known = id end
    end
  end
  return known
end
local length = redis.call('XLEN', history_key)
local ids = {}
-- Consecutive updates of one topic (a batch POST) travel as one message: one PUBLISH,
-- one read and one hand-over per run in every web process, not one per update.
local run, run_topic = {}, nil
local function flush()
  redis.call('HSET', latest_key, run_topic, run[#run])
  redis.call('PUBLISH', channel_prefix .. run_topic, table.concat(run, '\n'))
end
for i = FIRST_DRAFT, LAST_DRAFT, 3 do
  local topic, clock, body = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local id = redis.call('XADD', history_key, '*', 't', topic, 'c', clock, 'b', body,
    'p', previous_of(topic))
  previous[topic] = id
  if run_topic ~= topic then
    if run_topic then flush() end
    run, run_topic = {}, topic
  end
  run[#run + 1] = epoch .. ':' .. id .. ' ' .. clock .. ' ' .. body
  ids[#ids + 1] = id
  length = length + 1
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
