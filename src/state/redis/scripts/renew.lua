-- Extends this replica's live leases (slots or queue places) on one
-- account; leases that already expired are not brought back.
-- KEYS[1] leases; ARGV[1] lease ms, ARGV[2..] tokens
-- Returns how many were extended.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
local kept = 0
for i = 2, #ARGV do
  kept = kept + redis.call('ZADD', KEYS[1], 'XX', 'CH', now + lease, ARGV[i])
end
if kept > 0 then
  redis.call('PEXPIRE', KEYS[1], lease * 2)
end
return kept
