-- Store a result. KEYS[1] = record; ARGV = fingerprint, token, result, ttl_ms.
-- Returns 1 stored, 0 not holder.
local v = redis.call('GET', KEYS[1])
if v and (string.sub(v, 1, 1) ~= 'P' or string.sub(v, 66, 97) ~= ARGV[2]) then
  return 0
end
redis.call('SET', KEYS[1], 'C' .. ARGV[1] .. ARGV[2] .. ARGV[3], 'PX', ARGV[4])
return 1
