-- Renew our own lease, or take a free one; never take one another process holds.
-- KEYS: the lease.  ARGV: our token, ttl in ms.  Returns 1 when we hold it.
-- Only a free lease is written with SET: a full Redis (noeviction at maxmemory) refuses SET
-- but not PEXPIRE or GET, so the holder keeps its lease and a standby just stands by.
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if holder then return 0 end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
