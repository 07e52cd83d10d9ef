-- Record that a derived topic's deriver evaluated every boundary up to T, never moving it
-- back: a deriver paused past its lease that writes late must not hold the ticks back.
-- KEYS: the partition's derived hash.  ARGV: topic, T (`time_key`: string order is time
-- order).  Returns 1 when T was recorded.
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and current >= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
