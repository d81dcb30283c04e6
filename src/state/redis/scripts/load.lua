-- One account's load: live leases, live waiters, requests in the RPM
-- window, and the longest cooldown in force (account-wide or for the model).
-- KEYS[1] leases, KEYS[2] waiters, KEYS[3] RPM counter, KEYS[4] cooldowns
-- ARGV[1] model ('' for none)
-- Returns {in_flight, waiting, rpm_used, cooldown ms left, reason}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local in_flight = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
local waiting = redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf')
local rpm = tonumber(redis.call('GET', KEYS[3]) or '0')
local fields = {'*'}
if ARGV[1] ~= '' then
  fields[2] = 'm:' .. ARGV[1]
end
local left, reason = 0, ''
for _, v in ipairs(redis.call('HMGET', KEYS[4], unpack(fields))) do
  if v then
    local sep = string.find(v, ':', 1, true)
    local l = tonumber(string.sub(v, 1, sep - 1)) - now
    if l > left then
      left = l
      reason = string.sub(v, sep + 1)
    end
  end
end
return {in_flight, waiting, rpm, left, reason}
