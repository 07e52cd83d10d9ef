-- Renew our own lease, or take a free one; never take one another process holds.
-- KEYS: lease, taken (the token the lease was last taken under; it outlives the lease).
-- ARGV: token (of the tenure we hold, or last held), fresh token, ttl_ms.
-- Returns HELD when another process holds the lease; RENEWED when it is ours under `token`;
-- RESUMED when it had lapsed and nobody took it since we last did, so nothing was written
-- under another token and our tenure goes on; TAKEN when it was free and is now ours under
-- the fresh token: a new tenure, after another process's (even when we held it before that).
-- pushsvc/broker/redis/script_replies.py's LeaseCode mirrors these.
-- Only a free lease is written with SET: a full Redis (noeviction at maxmemory) refuses SET
-- but not PEXPIRE or GET, so the holder keeps its lease and a standby just stands by.
local lease_key, taken_key = KEYS[1], KEYS[2]
local token, fresh_token, ttl_ms = ARGV[1], ARGV[2], ARGV[3]
local HELD, RENEWED, TAKEN, RESUMED = 0, 1, 2, 3

local holder = redis.call('GET', lease_key)
if holder == token then
  redis.call('PEXPIRE', lease_key, ttl_ms)
  return RENEWED
end
if holder then return HELD end
if redis.call('GET', taken_key) == token then
  redis.call('SET', lease_key, token, 'PX', ttl_ms)
  return RESUMED
end
redis.call('SET', lease_key, fresh_token, 'PX', ttl_ms)
redis.call('SET', taken_key, fresh_token)
return TAKEN
