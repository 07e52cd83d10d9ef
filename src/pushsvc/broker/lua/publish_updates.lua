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
--       alert_keys (the sorted set of `alerts`' instance keys, score 0, likewise), holds
--       (reader -> `<epoch or *> <stream id> <until ms>`: the history is kept after that id
--       for the reader, see the trim at the end), history_start (the `o` of the history's
--       oldest entry: see below); then every key the script names from the payload (a
--       topic's groups, checkpoint and set of series keys, a point's stream and corrections,
--       the series keys a deleted topic's set names: `publish_payload.named_keys`), which it
--       reads by name, never from KEYS. They are declared so that a Redis Cluster whose slot
--       is half moved judges them all before the script starts (TRYAGAIN while some have
--       left the node) instead of failing a command mid-run, after earlier ones were written
--       (a script is not rolled back). Every key carries the partition's hash tag, so on a
--       Redis Cluster they share one slot.
-- ARGV[1]: the payload, JSON (pushsvc/broker/publish_payload.py's PayloadJSON), read by
--       field name below: the partition's names and settings (epoch_candidate, history_len,
--       history_bytes: the most bytes of bodies the history holds, whatever holds it,
--       alert_retention_ms: how long an alert change is kept in alert_changes whatever
--       history_len keeps, channel_prefix of the updates channels, partition_channel: '', or
--       on a Redis Cluster the channel that also carries every run after its topic and a
--       newline, publish_command: PUBLISH, or SPUBLISH on a Redis Cluster, groups_prefix,
--       series_keys_prefix, checkpoint_prefix), the caller's lease and position
--       (lease_token: the token of the shard's lease it holds; applied_id: the last log
--       entry the batch covers; applied_entries: how many entries that was; applied_after:
--       the entry the caller last saw published, the batch continues from it), and drafts:
--       each {topic, clock (µs, a decimal string), kind (u update, p point, a alert
--       change, d deletion: pushsvc/core/updates.py's Kind), groups ({id, JSON} it carries),
--       forgotten (ids of groups that left), point (a point's: key of its tier's stream, id
--       `<bucket start ms>-0`, min_id the oldest bucket start the tier keeps, ttl_ms, packed
--       in hex), instance (an alert change's: key, json while active, '' once resolved)}.
-- ARGV[1 + place]: the body of the draft at that place (1 for the first): beside the
--       document, not in it, which spares cjson unescaping every body.
-- Returns {epoch, stream ids in draft order ('' for a point its series holds already: it
-- was published before and is not published again)}, or an error when the lease is not
-- the caller's (FENCED), or when the log is recorded as applied past `applied_after`
-- (PUBLISHED): some of the batch was published already, by this caller's own attempt whose
-- answer it never got (a dropped connection, a timeout) or by another holder, and nothing
-- is published twice. A recorded position behind `applied_after` (a failover lost the last
-- publishes) lets the batch through, as before.
--
-- `latest` values and updates' messages are `<id> <clock_us> <body>`; any other kind's message
-- is `<kind> <id> <clock_us> <body>`: the receiver splices the id into the body
-- (pushsvc/core/updates.py owns the update JSON; this script never edits it nor reads it).
-- A point or an alert is a message like an update, but never a topic's latest.
--
-- A deletion (DELETE /topics/{t}) is a message like an update too (its streams' `"gap": true`
-- snapshot), never a topic's latest: at its place among the drafts, the topic's latest
-- update, groups, checkpoint and series (every key its set of series keys names) are
-- dropped, and it starts no chain: the topic's next update is its first again, so a read of
-- the topic's history ends before the deletion.
--
-- Each history entry says its kind (`k`) and names the stream id of its topic's previous
-- update (`p`, '' for none kept), so one topic's history is read by following them
-- (topic_history.lua) instead of scanning everyone's updates. Points are left out of that
-- chain (a topic's history is its updates; a stream's resume reads the whole history, points
-- included). Alert changes, never a topic's latest, chain from `alerts_head` instead. Each
-- entry names the history's previous entry too (`g`), so that once the history is trimmed
-- the oldest entry kept tells the newest trimmed (`trimmed`), and its number (`n`: one more
-- than the entry before it), so that the entries after any id are counted from two entries.
--
-- The history keeps the newest `history_len` entries (more while readers hold them: see the
-- trim at the end) and, of those, no more than `history_bytes` of bodies (always the newest
-- entry at least): 10,000 updates of 64 KiB messages would be 650 MB a partition. The byte
-- bound is a hard memory bound: it trims entries a hold names too (that reader's replay finds
-- the partition lost, a gap). Each entry records the bytes of bodies appended to the epoch's
-- history before it (`o`), and `history_start` the `o` of the oldest entry kept, so what the
-- history holds is known without reading it (the newest entry's `o` and body, past
-- `history_start`); only the entries that the bound trims are read, to find the first kept.
-- Entries written before `o` was count as 0: they are trimmed first, by count or bytes.
local epoch_key, history_key, latest_key = KEYS[1], KEYS[2], KEYS[3]
local trimmed_key, applied_key, lease_key = KEYS[4], KEYS[5], KEYS[6]
local alerts_key, alerts_head_key, checkpoints_key = KEYS[7], KEYS[8], KEYS[9]
local alert_changes_key, alert_changes_trimmed_key = KEYS[10], KEYS[11]
local names_key, alert_keys_key, holds_key = KEYS[12], KEYS[13], KEYS[14]
local history_start_key = KEYS[15]

local payload = cjson.decode(ARGV[1])
local epoch_candidate = payload.epoch_candidate
local history_len = payload.history_len
local history_bytes = payload.history_bytes
local alert_retention_ms = payload.alert_retention_ms
local channel_prefix = payload.channel_prefix
local partition_channel = payload.partition_channel
local publish_command = payload.publish_command
local groups_prefix = payload.groups_prefix
local series_keys_prefix = payload.series_keys_prefix
local checkpoint_prefix = payload.checkpoint_prefix
local lease_token = payload.lease_token
local applied_id = payload.applied_id
local applied_entries = payload.applied_entries
local applied_after = payload.applied_after
local drafts = payload.drafts

-- A draft's kind (pushsvc/core/updates.py's Kind: change both together).
local UPDATE, POINT, ALERT, DELETION = 'u', 'p', 'a', 'd'

-- A point's packed form travels as hex (JSON strings carry text): its bytes again.
local function unhex(text)
  return (string.gsub(text, '..', function(pair) return string.char(tonumber(pair, 16)) end))
end

if redis.call('GET', lease_key) ~= lease_token then
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
local recorded = redis.call('HGET', applied_key, 'id')
if recorded and past(recorded, applied_after) then
  return redis.error_reply('PUBLISHED the log is applied up to ' .. recorded .. ', past '
    .. applied_after .. ' where this batch continues from')
end
local epoch = redis.call('GET', epoch_key)
if not epoch or redis.call('EXISTS', history_key) == 0 then
  -- No epoch, or it outlived its history: whatever was there is lost, start a new one.
  epoch = epoch_candidate
  redis.call('SET', epoch_key, epoch)
  redis.call('DEL', latest_key, names_key, trimmed_key, alerts_head_key, alert_changes_key,
    alert_changes_trimmed_key, history_start_key)
end
redis.call('HSET', applied_key, 'id', applied_id)
redis.call('HINCRBY', applied_key, 'n', applied_entries)
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
-- An entry's field `name`, nil when it has none.
local function field_of(entry, name)
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end
-- The history's newest id, which the next entry names as its predecessor (`g`): once the
-- history is trimmed, the oldest entry kept names the newest trimmed. Reading the trimmed
-- entries themselves to learn it (XRANGE ... COUNT <trimmed>) cost 50 ms for 10,000.
local newest = ''
-- The number of the newest entry (`n`; an entry written before entries were numbered: the
-- length, which numbers only entries written since).
local number = length
-- The bytes of bodies appended to this epoch's history so far: the next entry's `o`.
local offset = 0
if length > 0 then
  local last = redis.call('XREVRANGE', history_key, '+', '-', 'COUNT', 1)[1]
  newest = last[1]
  number = tonumber(field_of(last, 'n')) or length
  offset = (tonumber(field_of(last, 'o')) or 0) + #field_of(last, 'b')
end
local ids = {}
-- Consecutive updates of one topic (a batch POST) travel as one message: one PUBLISH,
-- one read and one hand-over per run in every web process, not one per update. A run is
-- published once it holds RUN_BYTES: Lua 5.1's table.concat of one 6 MB run cost 70 ms
-- (its buffer merges and copies ever longer strings), 20 ms in runs of 64 KiB.
local RUN_BYTES = 65536
local run, run_topic, run_latest, run_bytes = {}, nil, nil, 0
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
-- A series key of `topic`, kept for `ttl` ms: the topic's set of series keys (what its
-- deletion drops) names it, and expires with the longest-kept of them. True.
local function kept_for(key, ttl, topic)
  redis.call('PEXPIRE', key, ttl)
  local index_key = series_keys_prefix .. topic
  redis.call('SADD', index_key, key)
  if redis.call('PTTL', index_key) < ttl then
    redis.call('PEXPIRE', index_key, ttl)
  end
  return true
end
-- A point at or below the top of its tier's stream (XADD takes ids above it only, and a
-- stream entry cannot be replaced) is kept in the tier's sorted set of points beside it
-- (point.corrected, scored by the stream id's ms), which reads lay over the stream's: a
-- correction (point.revision above 0: a late event amended a bucket published before), or
-- the first point of a bucket a late event made. False when this revision of it or a later
-- one is held already (a first point: also when the stream holds it).
local function keep_beside(point, topic)
  local key, score, revision = point.corrected, point.score, point.revision or 0
  local held = redis.call('ZRANGEBYSCORE', key, score, score)
  if #held > 0 then
    if tonumber(string.sub(held[1], 1, 8), 16) >= revision then return false end
  elseif revision == 0 and #redis.call('XRANGE', point.key, point.id, point.id) > 0 then
    return false
  end
  redis.call('ZREMRANGEBYSCORE', key, score, score)
  redis.call('ZADD', key, score, string.format('%08x', revision) .. unhex(point.packed))
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. point.min_score)
  return kept_for(key, point.ttl_ms, topic)
end
-- Keep a point in its tier's stream, or beside it (`keep_beside`) when the stream's top is
-- at or above its bucket; false when it is held already.
local function keep_point(point, topic)
  local series_key = point.key
  local added = redis.pcall('XADD', series_key, point.id, 'p', unhex(point.packed))
  if type(added) == 'table' and added.err then
    if string.find(added.err, 'equal or smaller', 1, true) then
      return keep_beside(point, topic)
    end
    return error(added)  -- anything else (OOM...) fails the script as redis.call would
  end
  redis.call('XTRIM', series_key, 'MINID', point.min_id)
  return kept_for(series_key, point.ttl_ms, topic)
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
-- A topic's live groups as of this draft (what a snapshot shows), marked with the epoch: a
-- group written in a lost history is not live. Those of a draft that a deletion of its topic
-- follows are dropped again by the deletion.
-- (Most drafts carry neither list: no table is made for them.)
local function keep_groups(topic, groups, forgotten)
  local groups_key = groups_prefix .. topic
  if groups then
    for _, group in ipairs(groups) do
      redis.call('HSET', groups_key, group[1], epoch .. ' ' .. group[2])
    end
  end
  if forgotten then
    for _, group_id in ipairs(forgotten) do
      redis.call('HDEL', groups_key, group_id)
    end
  end
end
for place, draft in ipairs(drafts) do
  local topic, clock, body, kind = draft.topic, draft.clock, ARGV[1 + place], draft.kind
  local point, alert, deletion = kind == POINT, kind == ALERT, kind == DELETION
  if point and not keep_point(draft.point, topic) then
    ids[#ids + 1] = ''
  else
    if deletion then
      drop_topic(topic)
      previous[topic] = ''
      if run_topic == topic then run_latest = nil end
    end
    number = number + 1
    local id = redis.call('XADD', history_key, '*', 't', topic, 'c', clock, 'b', body,
      'p', previous_of(topic, alert), 'k', kind, 'g', newest, 'n', number,
      'o', string.format('%.0f', offset))
    newest = id
    offset = offset + #body
    if alert then
      local instance = draft.instance
      redis.call('SET', alerts_head_key, epoch .. ':' .. id)
      keep_alert_change(id, clock, body)
      if instance.json == '' then
        redis.call('HDEL', alerts_key, instance.key)
        redis.call('ZREM', alert_keys_key, instance.key)
      else
        redis.call('HSET', alerts_key, instance.key, instance.json)
        redis.call('ZADD', alert_keys_key, 0, instance.key)
      end
    end
    if draft.groups or draft.forgotten then keep_groups(topic, draft.groups, draft.forgotten) end
    if not point and not deletion then previous[topic] = id end
    -- An update's message is `<id> <clock_us> <body>`, as `latest` holds it; any other kind's
    -- says its kind first, `<kind> <id> <clock_us> <body>` (pushsvc/broker/redis/wire.py).
    local message = epoch .. ':' .. id .. ' ' .. clock .. ' ' .. body
    if kind ~= UPDATE then message = kind .. ' ' .. message end
    if run_topic ~= topic or run_bytes + #message > RUN_BYTES then
      if run_topic then flush() end
      run, run_topic, run_latest, run_bytes = {}, topic, nil, 0
    end
    if kind == UPDATE then run_latest = message end
    run[#run + 1] = message
    run_bytes = run_bytes + #message + 1
    ids[#ids + 1] = id
    length = length + 1
  end
end
if run_topic then flush() end
-- The history keeps `history_len` entries, and more while a reader holds them (a
-- sessionizer, which reads its sources' updates after its cursor): every entry after the
-- oldest id a live hold of this epoch names, within `history_bytes` (below). A hold past its
-- time is dropped: its reader stopped holding.
local keep = history_len
if length > history_len and redis.call('EXISTS', holds_key) == 1 then
  local now = redis.call('TIME')
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  local holds = redis.call('HGETALL', holds_key)
  local held
  for i = 1, #holds, 2 do
    local of_epoch, after, until_ms = string.match(holds[i + 1], '^(%S+) (%S+) (%d+)$')
    if not until_ms or tonumber(until_ms) < now_ms then
      redis.call('HDEL', holds_key, holds[i])
    elseif (of_epoch == '*' or of_epoch == epoch) and (not held or past(held, after)) then
      held = after
    end
  end
  if held then
    local unread = redis.call('XRANGE', history_key, '(' .. held, '+', 'COUNT', 1)[1]
    local first = unread and tonumber(field_of(unread, 'n'))
    if first then keep = math.max(history_len, number - first + 1) end
  end
end
local start, moved = nil, false  -- the `o` of the oldest entry kept; whether a trim moved it
if length > keep then
  -- The newest trimmed id is the predecessor the oldest entry kept names (`g`); entries
  -- written before entries named theirs are read instead, once, as they are trimmed.
  local gone
  if not field_of(redis.call('XRANGE', history_key, '-', '+', 'COUNT', 1)[1], 'g') then
    local trimmed = redis.call('XRANGE', history_key, '-', '+', 'COUNT', length - keep)
    gone = trimmed[#trimmed][1]
  end
  redis.call('XTRIM', history_key, 'MAXLEN', '=', keep)
  local oldest = redis.call('XRANGE', history_key, '-', '+', 'COUNT', 1)[1]
  gone = gone or field_of(oldest, 'g')
  redis.call('SET', trimmed_key, gone)
  start, moved = tonumber(field_of(oldest, 'o')) or 0, true
  length = keep
end
if start == nil then start = tonumber(redis.call('GET', history_start_key)) or 0 end
-- Then the bytes, over whatever the count kept (held entries too: a hard memory bound; a
-- reader whose held entries go finds the partition lost, a gap it counts).
if offset - start > history_bytes and length > 1 then
  -- Past the bytes: the first entry kept is the oldest that starts at or after `floor` (or
  -- the newest, whatever its size). The entries before it are read a page at a time.
  local floor = offset - history_bytes
  local kept, gone, after = nil, nil, '-'
  while not kept do
    local page = redis.call('XRANGE', history_key, after, '+', 'COUNT', 16)
    for _, entry in ipairs(page) do
      if entry[1] == newest or (tonumber(field_of(entry, 'o')) or 0) >= floor then
        kept = entry
        break
      end
      gone = entry[1]
    end
    after = '(' .. page[#page][1]
  end
  if gone then
    redis.call('XTRIM', history_key, 'MINID', '=', kept[1])
    redis.call('SET', trimmed_key, gone)
    start = tonumber(field_of(kept, 'o')) or 0
    moved = true
  end
end
if moved then redis.call('SET', history_start_key, string.format('%.0f', start)) end
return {epoch, ids}
