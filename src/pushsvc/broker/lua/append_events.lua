-- Append one batch of a topic's events to its shard's event log, judged by the lateness
-- rule: as one entry, or as several when the caller cut it (pushsvc/broker/shared_log.py's
-- ENTRY_EVENTS), with the entries of its events past the grace on the topic's late stream,
-- all of them or none.
--
-- The lateness rule and what it does to a batch are pushsvc/core/lateness.py's, mirrored
-- here against the topic clock so that no two appends can race: an event is past the grace
-- when ts + lateness < T, where T is the largest event time (or tick clock) logged for the
-- topic; each on-time event of the batch moves T for the ones after it. Times arrive as
-- fixed-width decimal keys (see broker/redis/keys.py) so that comparing strings compares the
-- 64-bit integers exactly (Lua numbers are doubles).
--
-- The caller cannot know the clock, so it sends the batch as it expects it split: the
-- indices it expects past the grace (`expected`, '' for none: the batch as it came), and
-- the payloads of that split (pushsvc.core.lateness.split_late: the topic's entries, with
-- its messages past the grace marked, then the late stream's). The script judges the batch;
-- when its verdict is not the expected one it logs nothing and answers SPLIT with the
-- verdict and the clock it judged by, and the caller sends the batch split so (a clock only
-- moves forward: a second try is the last but under a racing append). Where the topic keeps
-- no late stream (late_topic ''), a plain event past the grace refuses the batch: LATE (a
-- message, which `messages` names, is never refused for its time).
-- The late stream `<topic>.late` lives in the topic's partition (pushsvc/core/partitions.py),
-- so both topics' entries and the key are written by this one script, in one slot.
--
-- The clocks hash is also the set of topics the partition keeps. A batch for a topic it does
-- not hold (new, or forgotten: forget_topics.lua), or whose late stream it does not hold yet,
-- is logged only when the caller says a new topic is admitted (it counts the topics of every
-- partition, which no one-slot script can): otherwise the script answers NEW_TOPIC and logs
-- nothing.
--
-- An idempotency key (digest non-empty) is checked first: when its key exists, the batch was
-- logged within the window by a request with this key, and nothing is appended: the same
-- digest answers that request's answer, another digest is refused. Otherwise the key is set,
-- with its window as expiry, only when the batch is logged - together with it. Its name goes
-- into the partition's order (a sorted set scored by expiry, in ms of the log's clock: the
-- entry id's); names of keys already expired leave it, and past max_keys names the soonest to
-- expire are deleted early, key and name (pushsvc/core/idempotency.py's
-- MAX_KEYS_PER_PARTITION): the partition never holds more keys than that.
--
-- An empty batch (times '') logs nothing and leaves the clock alone: with a key, it only
-- remembers it, answer 0, checked as above first; its expiry counts from Redis' TIME, there
-- being no entry id to count from.
--
-- KEYS: log, clocks, logged, then the optional keys ARGV says are given, in this order:
--       lease (when lease_token is not ''), idempotency key and the partition's key order
--       (when digest is not '')
-- ARGV: topic, late_topic ('' when the topic keeps no late stream), times, admit_new ('1'
--       when a new topic may be logged), lease_token or '', digest or '', answer, window_ms,
--       wake_channel ('', or on a Redis Cluster the partition's channel to SPUBLISH an empty
--       message on once the batch is logged: it wakes the partition's aggregator, which
--       cannot block on many logs there), max_keys, expected, late_entries (how many of the
--       payloads are the late stream's: the last ones), messages (where late_topic is '':
--       the indices of the batch's messages as ',i,j,', else ''), then the payloads, in order
--       times: for each event its ts key then its limit key (ts + lateness), 19 characters
--       each, concatenated (one argument, not two per event: packing thousands of arguments
--       cost the web process more than the script costs Redis); answer: what a repeat of
--       this request is answered (the events logged on time), kept with the digest for
--       window_ms
-- Returns {LOGGED, the last entry's id ('' for an empty batch), keys evicted early}, {LATE,
-- index of the refused event, T}, {SPLIT, the indices past the grace, T before the batch
-- or ''}, {NEW_TOPIC} when a topic is new and admit_new is not '1', {REPLAYED, answer} when
-- the idempotency key was seen with this digest, {KEY_REUSED} when it was seen with another;
-- an error when a lease is given and the token is not its holder's (the Redis bridge: a
-- bridge that lost its lease during a pause must not append what its successor already did).
local log_key, clocks_key, logged_key = KEYS[1], KEYS[2], KEYS[3]
local topic, late_topic, times = ARGV[1], ARGV[2], ARGV[3]
local admit_new = ARGV[4] == '1'
local lease_token, digest = ARGV[5], ARGV[6]
local answer, window_ms, wake_channel = ARGV[7], ARGV[8], ARGV[9]
local max_keys = tonumber(ARGV[10])
local expected, late_entries, messages = ARGV[11], tonumber(ARGV[12]), ARGV[13]
local FIRST_PAYLOAD = 14
-- Each optional key is given only with its argument, so its index depends on the others.
local next_key = 4
local lease_key = false
if lease_token ~= '' then
  lease_key = KEYS[next_key]
  next_key = next_key + 1
end
local idempotency_key = digest ~= '' and KEYS[next_key]
local order_key = digest ~= '' and KEYS[next_key + 1]

-- The reply's first element. pushsvc/broker/redis/script_replies.py's AppendCode mirrors
-- these: change both together.
local LATE, LOGGED, NEW_TOPIC, REPLAYED, KEY_REUSED, SPLIT = 0, 1, 2, 3, 4, 5
-- The length of a time key (keys.py's _TIME_DIGITS); an event takes two in `times`.
local TIME_KEY_LENGTH = 19
local EVENT_LENGTH = 2 * TIME_KEY_LENGTH

if lease_token ~= '' and redis.call('GET', lease_key) ~= lease_token then
  return redis.error_reply('FENCED the lease is held by another bridge')
end
if idempotency_key then
  local seen = redis.call('GET', idempotency_key)
  if seen then
    if string.sub(seen, 1, #digest) == digest then
      return {REPLAYED, string.sub(seen, #digest + 1)}
    end
    return {KEY_REUSED}
  end
end
local clock = redis.call('HGET', clocks_key, topic)
local empty = #times == 0
if not clock and not admit_new and not empty then
  return {NEW_TOPIC}
end
local before = clock
local found = {}
local late_newest = false
for at = 1, #times, EVENT_LENGTH do
  local ts = string.sub(times, at, at + TIME_KEY_LENGTH - 1)
  if not clock or ts > clock then
    clock = ts
  elseif string.sub(times, at + TIME_KEY_LENGTH, at + EVENT_LENGTH - 1) < clock then
    local index = (at - 1) / EVENT_LENGTH
    if late_topic == '' and not string.find(messages, ',' .. index .. ',', 1, true) then
      return {LATE, index, clock}
    end
    found[#found + 1] = index
    if late_topic ~= '' and (not late_newest or ts > late_newest) then
      late_newest = ts
    end
  end
end
local verdict = table.concat(found, ',')
if verdict ~= expected then
  return {SPLIT, verdict, before or ''}
end
local late_clock = late_newest and redis.call('HGET', clocks_key, late_topic)
if late_newest and not late_clock and not admit_new then
  return {NEW_TOPIC}
end
local id = ''
if not empty then
  redis.call('HSET', clocks_key, topic, clock)
  if late_newest and (not late_clock or late_newest > late_clock) then
    redis.call('HSET', clocks_key, late_topic, late_newest)
  end
  -- `n`: the entry's number in the log (1 for the first ever), so that a reader can tell
  -- entries it never read were trimmed (a gap in the numbers): `Entry.n`.
  local payloads = #ARGV - FIRST_PAYLOAD + 1
  local n = redis.call('INCRBY', logged_key, payloads) - payloads
  for i = FIRST_PAYLOAD, #ARGV do
    n = n + 1
    local name = topic
    if i > #ARGV - late_entries then name = late_topic end
    id = redis.call('XADD', log_key, '*', 'n', n, 'k', 'e', 't', name, 'v', ARGV[i])
  end
end
local evicted = 0
if idempotency_key then
  redis.call('SET', idempotency_key, digest .. answer, 'PX', window_ms)
  local now_ms
  if empty then
    local now = redis.call('TIME')
    now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  else
    now_ms = tonumber(string.match(id, '^%d+'))
  end
  local expires_ms = now_ms + tonumber(window_ms)
  redis.call('ZREMRANGEBYSCORE', order_key, '-inf', now_ms)
  redis.call('ZADD', order_key, expires_ms, idempotency_key)
  local over = redis.call('ZCARD', order_key) - max_keys
  if over > 0 then
    local soonest = redis.call('ZPOPMIN', order_key, over)
    for i = 1, #soonest, 2 do
      evicted = evicted + redis.call('DEL', soonest[i])
    end
  end
  if redis.call('PTTL', order_key) < tonumber(window_ms) then
    redis.call('PEXPIRE', order_key, window_ms)
  end
end
if wake_channel ~= '' and not empty then
  redis.call('SPUBLISH', wake_channel, '')
end
return {LOGGED, id, evicted}
