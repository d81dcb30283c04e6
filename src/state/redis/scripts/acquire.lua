-- Takes a slot lease on one account if it has room.
-- KEYS[1] leases (sorted set: token -> expiry ms), KEYS[2] RPM counter
-- ARGV[1] token, ARGV[2] concurrency, ARGV[3] rpm limit (0: none),
-- ARGV[4] lease ms, ARGV[5] RPM window ms
-- Returns 1 when taken, 0 when full.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[4])
-- Leases of crashed replicas end here.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local rpm = tonumber(ARGV[3])
if rpm > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') >= rpm then
  return 0
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[1], lease * 2)
redis.call('INCR', KEYS[2])
-- A window starts with its first request.
if redis.call('PTTL', KEYS[2]) < 0 then
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[5]))
end
return 1
