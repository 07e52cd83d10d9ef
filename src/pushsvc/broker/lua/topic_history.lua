-- One topic's updates in the history, newest first, found by following each entry's `p`
-- (the stream id of the topic's previous update, written by publish_updates.lua): a read
-- costs the topic's own entries, never a scan of everyone's.
--
-- KEYS: epoch, latest, history, alerts_head
-- ARGV: topic, most (entries to return), oldest ('' for any, else the oldest clock_us
--       wanted), start_id ('' for the topic's newest, else the stream id to start from),
--       alerts ('1' for the topic of alert changes: never a topic's latest, its newest entry
--       is `alerts_head`)
-- Returns {epoch, head, how, next, id, clock_us, body, id, clock_us, body, ...}, where head
-- is the newest id of the whole history and `how` says why the walk stopped: END (the
-- topic's first update kept, a trimmed one, or one older than wanted), MORE (the most
-- entries were returned; go on from `next`) or SCAN (an entry written before `p` was,
-- `next`: scan on from there). {false, false, END, false} when there is no history.
local epoch_key, latest_key, history_key = KEYS[1], KEYS[2], KEYS[3]
local alerts_head_key = KEYS[4]
local topic, most, oldest = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local start_id, alerts = ARGV[4], ARGV[5] == '1'

-- Why the walk stopped. pushsvc/broker/redis/script_replies.py's WalkStop mirrors these:
-- change both together.
local END, MORE, SCAN = 'end', 'more', 'scan'

local epoch = redis.call('GET', epoch_key)
local newest = redis.call('XREVRANGE', history_key, '+', '-', 'COUNT', 1)
if not epoch or #newest == 0 then
  return {false, false, END, false}
end
local id = start_id
if id == '' then
  id = nil
  local latest
  if alerts then
    latest = redis.call('GET', alerts_head_key)
  else
    latest = redis.call('HGET', latest_key, topic)
  end
  if latest then
    local of_epoch, latest_id = string.match(latest, '^([^: ]+):([^ ]+)')
    if of_epoch == epoch then id = latest_id end
  end
end
-- out[3] and out[4] (how, next) are filled in once the walk stops.
local how, next_id = END, false
local out = {epoch, newest[1][1], how, next_id}
local taken = 0
while id do
  if taken == most then
    how, next_id = MORE, id
    break
  end
  local found = redis.call('XRANGE', history_key, id, id)
  if #found == 0 then break end  -- trimmed: nothing older is kept
  local flat, fields = found[1][2], {}
  for i = 1, #flat, 2 do fields[flat[i]] = flat[i + 1] end
  if fields.t ~= topic or (oldest and tonumber(fields.c) < oldest) then break end
  local n = #out
  out[n + 1], out[n + 2], out[n + 3] = id, fields.c, fields.b
  taken = taken + 1
  if fields.p == nil then
    how, next_id = SCAN, id
    break
  end
  if fields.p == '' then break end
  id = fields.p
end
out[3], out[4] = how, next_id
return out
