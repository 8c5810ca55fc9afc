-- Append a chunk of a prediction's logs, keeping the string under a cap by dropping its head.
-- KEYS[1] the logs string   KEYS[2] the prediction's event stream
-- ARGV[1] the text          ARGV[2] the cap in bytes     ARGV[3] the event stream's max length
local n = redis.call('APPEND', KEYS[1], ARGV[1])
local cap = tonumber(ARGV[2])
if cap > 0 and n > cap then
  -- keep the newest half, so the next chunks have room before the next trim
  local keep = math.floor(cap / 2)
  local tail = redis.call('GETRANGE', KEYS[1], -keep, -1)
  -- never start inside a UTF-8 sequence: drop leading continuation bytes
  local i = 1
  while i <= #tail and string.byte(tail, i) >= 128 and string.byte(tail, i) < 192 do i = i + 1 end
  local marker = '[vendo: logs longer than ' .. cap .. ' bytes; the earliest were removed]\n'
  redis.call('SET', KEYS[1], marker .. string.sub(tail, i), 'KEEPTTL')
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'event', 'logs', 'data', ARGV[1])
return n
