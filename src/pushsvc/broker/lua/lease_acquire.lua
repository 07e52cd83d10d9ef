-- Renew our own lease, or take a free one; never take one another process holds.
-- KEYS: lease.  ARGV: token (ours), ttl_ms.  Returns 1 when we hold it, 0 when not.
-- Only a free lease is written with SET: a full Redis (noeviction at maxmemory) refuses SET
-- but not PEXPIRE or GET, so the holder keeps its lease and a standby just stands by.
local lease_key = KEYS[1]
local token, ttl_ms = ARGV[1], ARGV[2]

local holder = redis.call('GET', lease_key)
if holder == token then
  return redis.call('PEXPIRE', lease_key, ttl_ms)
end
if holder then return 0 end
if redis.call('SET', lease_key, token, 'NX', 'PX', ttl_ms) then return 1 end
return 0
