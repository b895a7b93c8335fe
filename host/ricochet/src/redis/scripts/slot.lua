-- Slot ticket. KEYS[1] = key stem; ARGV = delay_us, window_us.
-- Returns {ticket, window, earliest_us, now_us}.
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window_us = tonumber(ARGV[2])
local earliest_us = now_us + tonumber(ARGV[1])
-- Callers check this before the script; checked again here for any other caller of the file:
-- past 2^53 a Lua number rounds, and a window of 0 leaves a counter with no expiry.
if not (window_us >= 1) or earliest_us + 2 * window_us >= 9007199254740992 then
  return redis.error_reply('ERR slot request out of range: window_us must be at least 1 and now + delay + 2 * window below 2^53')
end
-- Float division is exact here: both operands are integers below 2^53.
local window = math.floor(earliest_us / window_us)
local key = KEYS[1] .. string.format('%d', window)
local ticket = redis.call('INCR', key) - 1
if ticket == 0 then
  -- Keep the counter while its window can still be asked for, plus one window of grace.
  redis.call('PEXPIRE', key, math.ceil(((window + 2) * window_us - now_us) / 1000))
end
return {ticket, window, earliest_us, now_us}
