-- Give the lease up if we still hold it.  KEYS: lease.  ARGV: token (ours).
-- Returns 1 when it was ours, 0 when not (nobody reads it: the lease expires anyway).
local lease_key = KEYS[1]
local token = ARGV[1]

if redis.call('GET', lease_key) == token then return redis.call('DEL', lease_key) end
return 0
