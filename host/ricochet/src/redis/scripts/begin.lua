-- Idempotency claim. KEYS[1] = record; ARGV = fingerprint, token, lease_ms.
-- Returns {0} started, {1, result} completed, {2, pttl} in progress, {3} mismatch.
local claim = 'P' .. ARGV[1] .. ARGV[2]
if redis.call('SET', KEYS[1], claim, 'NX', 'PX', ARGV[3]) then
  return {0}
end
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], claim, 'PX', ARGV[3])
  return {0}
end
if string.sub(v, 2, 65) ~= ARGV[1] then
  return {3}
end
if string.sub(v, 1, 1) == 'C' then
  return {1, string.sub(v, 98)}
end
return {2, redis.call('PTTL', KEYS[1])}
