-- Release a claim. KEYS[1] = record; ARGV = token. Returns 1 released (or absent), 0 not holder.
local v = redis.call('GET', KEYS[1])
if not v then
  return 1
end
if string.sub(v, 1, 1) == 'P' and string.sub(v, 66, 97) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
