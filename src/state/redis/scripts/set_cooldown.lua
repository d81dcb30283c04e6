-- Cools an account (field '*') or one of its models (field 'm:<model>')
-- down, keeping a longer cooldown already in force.
-- KEYS[1] cooldowns (hash: field -> '<until ms>:<reason>')
-- ARGV[1] field, ARGV[2] duration ms, ARGV[3] reason
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local duration = tonumber(ARGV[2])
local untl = now + duration
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local sep = string.find(current, ':', 1, true)
  if tonumber(string.sub(current, 1, sep - 1)) >= untl then
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d', untl) .. ':' .. ARGV[3])
if redis.call('PTTL', KEYS[1]) < duration then
  redis.call('PEXPIRE', KEYS[1], duration)
end
return 1
