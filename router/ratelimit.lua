-- One request against a token's rate limit: GCRA, so one key and one round trip per request.
-- KEYS[1] the bucket's theoretical arrival time (string, milliseconds since the epoch)
-- KEYS[2] metrics hash (`vendo_core.metrics`): a refusal counts `rate_limited` of the bucket
-- ARGV[1] requests allowed per period (also the burst)   ARGV[2] period in milliseconds
-- ARGV[3] the bucket's name
-- Returns {1, 0, remaining} when allowed, {0, retry after in ms, 0} when not (only the refusal is
-- counted).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local interval = period / limit
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - period
if allow_at > now then
  redis.call('HINCRBY', KEYS[2], 'rate_limited|' .. ARGV[3], 1)
  return {0, math.ceil(allow_at - now), 0}
end
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.max(1, math.ceil(new_tat - now)))
return {1, 0, math.floor((now - allow_at) / interval)}
