-- Number a batch of update drafts, append them to the history, remember each topic's
-- latest update, record how far the shard's event log has been applied, and PUBLISH them:
-- one atomic step, so ids are in delivery order across every publisher, and "applied up
-- to" moves exactly with the updates it produced (a standby continues where this stopped).
--
-- KEYS: epoch, history, latest, trimmed, applied, lease
-- ARGV: epoch candidate, history length, updates channel prefix,
--       lease token ('' publishes unfenced), applied entry id ('' leaves it), entries applied,
--       groups key prefix, number of drafts N,
--       then topic, clock_us, body for each of the N drafts,
--       then topic, group id, group JSON ('' forgets the group) for each group they carry.
-- Returns {epoch, stream ids in draft order}, or an error when the lease is not the caller's.
--
-- Messages and `latest` values are `<id> <clock_us> <body>`: the receiver splices the id
-- into the body (pushsvc/updates.py owns the update JSON; this script never edits it).
--
-- Each history entry also names the stream id of its topic's previous update (`p`, '' for
-- none kept), so one topic's history is read by following them (topic_history.lua) instead
-- of scanning everyone's updates.
if ARGV[4] ~= '' and redis.call('GET', KEYS[6]) ~= ARGV[4] then
  return redis.error_reply('FENCED the lease is held by another aggregator')
end
local epoch = redis.call('GET', KEYS[1])
if not epoch or redis.call('EXISTS', KEYS[2]) == 0 then
  -- No epoch, or it outlived its history: whatever was there is lost, start a new one.
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
  redis.call('DEL', KEYS[3], KEYS[4])
end
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[5], 'id', ARGV[5])
  redis.call('HINCRBY', KEYS[5], 'n', ARGV[6])
end
-- The stream id of each topic's newest update in this epoch's history, '' for none.
local previous = {}
local function previous_of(topic)
  local known = previous[topic]
  if known == nil then
    known = ''
    local latest = redis.call('HGET', KEYS[3], topic)
    if latest then
      local of_epoch, id = string.match(latest, '^([^: ]+):([^ ]+) ')
      if of_epoch == epoch then known = id end
    end
  end
  return known
end
local maxlen = tonumber(ARGV[2])
local length = redis.call('XLEN', KEYS[2])
local ids = {}
-- Consecutive updates of one topic (a batch POST) travel as one message: one PUBLISH,
-- one read and one hand-over per run in every web process, not one per update.
local run, run_topic = {}, nil
local function flush()
  redis.call('HSET', KEYS[3], run_topic, run[#run])
  redis.call('PUBLISH', ARGV[3] .. run_topic, table.concat(run, '\n'))
end
local groups_prefix = ARGV[7]
local drafts_end = 8 + 3 * tonumber(ARGV[8])
for i = 9, drafts_end, 3 do
  local topic, clock, body = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local id = redis.call('XADD', KEYS[2], '*', 't', topic, 'c', clock, 'b', body,
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
for i = drafts_end + 1, #ARGV, 3 do
  local groups = groups_prefix .. ARGV[i]
  if ARGV[i + 2] == '' then
    redis.call('HDEL', groups, ARGV[i + 1])
  else
    redis.call('HSET', groups, ARGV[i + 1], epoch .. ' ' .. ARGV[i + 2])
  end
end
if length > maxlen then
  local gone = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', length - maxlen)
  redis.call('SET', KEYS[4], gone[#gone][1])
  redis.call('XTRIM', KEYS[2], 'MAXLEN', '=', maxlen)
end
return {epoch, ids}
