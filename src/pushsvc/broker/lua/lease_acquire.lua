-- Renew our own lease, or take a free one; never take one another process holds.
-- KEYS: the lease.  ARGV: our token, ttl in ms.  Returns 1 when we hold it.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
