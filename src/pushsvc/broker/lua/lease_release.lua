-- Give the lease up if we still hold it.  KEYS: the lease.  ARGV: our token.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
