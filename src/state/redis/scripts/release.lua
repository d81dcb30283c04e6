-- Gives a lease back (idempotent) and tells waiting replicas.
-- KEYS[1] leases; ARGV[1] token, ARGV[2] channel, ARGV[3] message
-- Returns 1 when the lease was held, 0 when it was already gone.
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
if removed == 1 then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return removed
