-- Extend a claim. KEYS[1] = record; ARGV = token, lease_ms. Returns 1 renewed, 0 not holder.
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 1) == 'P' and string.sub(v, 66, 97) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
