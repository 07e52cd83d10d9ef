-- One topic's updates in the history, newest first, found by following each entry's `p`
-- (the stream id of the topic's previous update, written by publish_updates.lua): a read
-- costs the topic's own entries, never a scan of everyone's.
--
-- KEYS: epoch, latest, history
-- ARGV: topic, most entries to return, oldest clock_us wanted ('' for any),
--       stream id to start from ('' for the topic's newest)
-- Returns {epoch, head, how, next, id, clock_us, body, id, clock_us, body, ...}, where head
-- is the newest id of the whole history and `how` says why the walk stopped: 'end' (the
-- topic's first update kept, a trimmed one, or one older than wanted), 'more' (the most
-- entries were returned; go on from `next`) or 'scan' (an entry written before `p` was,
-- `next`: scan on from there). {false, false, 'end', false} when there is no history.
local epoch = redis.call('GET', KEYS[1])
local newest = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
if not epoch or #newest == 0 then
  return {false, false, 'end', false}
end
local topic, most, oldest = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local id = ARGV[4]
if id == '' then
  id = nil
  local latest = redis.call('HGET', KEYS[2], topic)
  if latest then
    local of_epoch, latest_id = string.match(latest, '^([^: ]+):([^ ]+) ')
    if of_epoch == epoch then id = latest_id end
  end
end
local out = {epoch, newest[1][1], 'end', false}
local taken = 0
while id do
  if taken == most then
    out[3], out[4] = 'more', id
    break
  end
  local found = redis.call('XRANGE', KEYS[3], id, id)
  if #found == 0 then break end  -- trimmed: nothing older is kept
  local flat, fields = found[1][2], {}
  for i = 1, #flat, 2 do fields[flat[i]] = flat[i + 1] end
  if fields.t ~= topic or (oldest and tonumber(fields.c) < oldest) then break end
  local n = #out
  out[n + 1], out[n + 2], out[n + 3] = id, fields.c, fields.b
  taken = taken + 1
  if fields.p == nil then
    out[3], out[4] = 'scan', id
    break
  end
  if fields.p == '' then break end
  id = fields.p
end
return out
