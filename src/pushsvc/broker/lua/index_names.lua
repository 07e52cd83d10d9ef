-- Build a partition's sorted index of topic names (`names`) from `latest` when the two
-- disagree: data written before the index was kept. One step, so no publish falls between
-- the read of `latest` and the index written from it.
--
-- KEYS: latest, names
-- Returns the number of names indexed, or false when the index already held as many as
-- `latest` (nothing written).
local latest_key, names_key = KEYS[1], KEYS[2]
local CHUNK = 1000  -- members per ZADD: Lua's unpack has a stack limit

if redis.call('ZCARD', names_key) == redis.call('HLEN', latest_key) then
  return false
end
redis.call('DEL', names_key)
local topics = redis.call('HKEYS', latest_key)
for first = 1, #topics, CHUNK do
  local args = {}
  for i = first, math.min(first + CHUNK - 1, #topics) do
    args[#args + 1] = 0
    args[#args + 1] = topics[i]
  end
  redis.call('ZADD', names_key, unpack(args))
end
return #topics
