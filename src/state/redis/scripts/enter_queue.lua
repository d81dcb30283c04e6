-- Joins an account's wait queue unless it is full.
-- KEYS[1] waiters (sorted set: token -> expiry ms)
-- ARGV[1] token, ARGV[2] max waiting, ARGV[3] lease ms
-- Returns 1 when joined, 0 when full.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[1], lease * 2)
return 1
