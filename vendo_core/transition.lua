-- Move one prediction to a new status, atomically, if its current status allows it.
-- KEYS[1] prediction hash      KEYS[2] running zset     KEYS[3] events stream
-- KEYS[4] dispatch zset        KEYS[5] logs string      KEYS[6] output list
-- KEYS[7] retention zset (prediction id scored by when its data is removed)
-- KEYS[8] webhook delivery stream: gets {prediction, event=start} on the move to processing when
--         the hash has `webhook`, and {prediction, event=completed} on a terminal move when it has
--         `webhook` or `webhook_completed`, so no path to a terminal state can miss its webhook
-- ARGV[1] target status        ARGV[2] allowed current statuses, comma separated
-- ARGV[3] prediction id        ARGV[4] "1" when the target is terminal
-- ARGV[5] heartbeat deadline (score in running, for processing)
-- ARGV[6] done-event data      ARGV[7] error-event data ("" for none)
-- ARGV[8] ttl seconds applied to every key of a terminal prediction
-- ARGV[9] when a terminal prediction's data is removed (epoch seconds; 0: never) into KEYS[7]
-- ARGV[10] billed milliseconds of a terminal move ("" : the time since `started_ts`, if it started)
-- ARGV[11] usage key prefix      ARGV[12] billing period label   ARGV[13] day label (UTC)
-- ARGV[14] now (epoch seconds)
-- KEYS[9] metrics hash (`vendo_core.metrics`): the queued/running gauges of the prediction's
--         version follow its moves, a terminal move counts `predictions_finished`, and billing
--         adds `billed_seconds`/`cost_usd`, all in this call
-- ARGV[15] K, the number of further metric increments; ARGV[16..15+2K] field, amount pairs added
--         to KEYS[9] when the move applies (an amount with a dot is a float)
-- ARGV[16+2K..] field, value pairs written to the hash with the status
-- A terminal move of a prediction with a `price_nanos` also fixes its `billed_ms` and
-- `cost_nanos` and adds them to its account's usage hash for the period (a key built from the
-- account: vendo runs on one Redis, not a cluster), in this same call: billed exactly once.
-- Returns {1, previous status} on success, {0, current status or false} when refused. A prediction
-- whose record is gone (expired) is dropped from the running and dispatch indexes, where it would
-- otherwise lapse again on every sweep, for good.
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then
  redis.call('ZREM', KEYS[2], ARGV[3])
  redis.call('ZREM', KEYS[4], ARGV[3])
  return {0, false}
end
local allowed = false
for s in string.gmatch(ARGV[2], '[^,]+') do
  if s == cur then allowed = true end
end
if not allowed then return {0, cur} end
local nm = tonumber(ARGV[15])
local first = 16 + 2 * nm
redis.call('HSET', KEYS[1], 'status', ARGV[1])
if #ARGV >= first + 1 then
  redis.call('HSET', KEYS[1], unpack(ARGV, first, #ARGV))
end
local who = redis.call('HMGET', KEYS[1], 'account', 'model', 'hardware', 'version')
local acct, model, hw, ver = who[1] or '', who[2] or '', who[3] or '', who[4] or ''
if cur == 'starting' then
  redis.call('HINCRBY', KEYS[9], 'predictions_queued|' .. model .. '|' .. ver, -1)
elseif cur == 'processing' then
  redis.call('HINCRBY', KEYS[9], 'predictions_running|' .. model .. '|' .. ver, -1)
end
if ARGV[1] == 'processing' then
  redis.call('HINCRBY', KEYS[9], 'predictions_running|' .. model .. '|' .. ver, 1)
end
for i = 16, first - 2, 2 do
  if string.find(ARGV[i + 1], '.', 1, true) then
    redis.call('HINCRBYFLOAT', KEYS[9], ARGV[i], ARGV[i + 1])
  else
    redis.call('HINCRBY', KEYS[9], ARGV[i], ARGV[i + 1])
  end
end
if ARGV[1] == 'processing' then
  redis.call('ZREM', KEYS[4], ARGV[3])
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[3])
  if redis.call('HEXISTS', KEYS[1], 'webhook') == 1 then
    redis.call('XADD', KEYS[8], '*', 'prediction', ARGV[3], 'event', 'start')
  end
end
if ARGV[4] == '1' then
  redis.call('ZREM', KEYS[2], ARGV[3])
  redis.call('ZREM', KEYS[4], ARGV[3])
  if ARGV[7] ~= '' then
    redis.call('XADD', KEYS[3], '*', 'event', 'error', 'data', ARGV[7])
  end
  redis.call('XADD', KEYS[3], '*', 'event', 'done', 'data', ARGV[6])
  if redis.call('HEXISTS', KEYS[1], 'webhook') == 1 or redis.call('HEXISTS', KEYS[1], 'webhook_completed') == 1 then
    redis.call('XADD', KEYS[8], '*', 'prediction', ARGV[3], 'event', 'completed')
  end
  redis.call('HINCRBY', KEYS[9], 'predictions_finished|' .. ARGV[1] .. '|' .. model .. '|' .. hw, 1)
  local price = tonumber(redis.call('HGET', KEYS[1], 'price_nanos') or '')
  if price then
    local ms = tonumber(ARGV[10])
    if not ms then
      local started = tonumber(redis.call('HGET', KEYS[1], 'started_ts') or '')
      ms = started and math.floor((tonumber(ARGV[14]) - started) * 1000 + 0.5) or 0
    end
    if ms < 0 then ms = 0 end
    local cost = math.floor((ms * price + 500) / 1000)
    local msS, costS = string.format('%.0f', ms), string.format('%.0f', cost)
    redis.call('HSET', KEYS[1], 'billed_ms', msS, 'cost_nanos', costS)
    if ms > 0 then
      local usage = ARGV[11] .. acct .. ':' .. ARGV[12]
      local f = ARGV[13] .. '|' .. model .. '|' .. hw
      redis.call('HINCRBY', usage, 'ms|' .. f, msS)
      redis.call('HINCRBY', usage, 'nanos|' .. f, costS)
      redis.call('HINCRBY', usage, 'total_ms', msS)
      redis.call('HINCRBY', usage, 'total_nanos', costS)
      redis.call('HINCRBY', KEYS[9], 'billed_seconds|' .. acct .. '|' .. hw, msS)
      redis.call('HINCRBY', KEYS[9], 'cost_usd|' .. acct .. '|' .. hw, costS)
    end
  end
  if tonumber(ARGV[9]) > 0 then
    redis.call('ZADD', KEYS[7], ARGV[9], ARGV[3])
  end
  local ttl = tonumber(ARGV[8])
  if ttl and ttl > 0 then
    for i = 1, 6 do
      if i ~= 2 and i ~= 4 then redis.call('EXPIRE', KEYS[i], ttl) end
    end
  end
end
return {1, cur}
