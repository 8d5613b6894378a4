-- The job ends: succeeded (with its result), failed, or cancelled. Written
-- once: a finished job is never changed again, however often its message
-- comes back. A cancel asked before this ran wins: the job ends cancelled,
-- without result.
-- KEYS[3..]: the result keys, one per format, in the order of ARGV[5..].
-- ARGV: channel, result_ttl, status, summary or error JSON, result values...
-- Or, with ARGV[5] '@uploads', the results were uploaded already: KEYS[3..]
-- are the result keys, then as many upload keys, each moved into its own.
-- Returns {outcome, job fields}: outcome 'finished', 'terminal' or 'missing'
-- (or 'missing_upload', nothing changed).
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', {}} end
if TERMINAL[status] then return {'terminal', redis.call('HGETALL', KEYS[1])} end
local target = ARGV[3]
if target == 'succeeded' and status ~= 'running' then
  return redis.error_reply('a ' .. status .. ' job cannot succeed')
end
local ttl = tonumber(ARGV[2])
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then
  target = 'cancelled'
end
if target == 'succeeded' and ARGV[5] == '@uploads' then
  local formats = (#KEYS - 2) / 2
  -- All there, or nothing moved: an upload that expired leaves the job running.
  for i = 3 + formats, #KEYS do
    if redis.call('EXISTS', KEYS[i]) == 0 then return {'missing_upload', {}} end
  end
  for i = 3, 2 + formats do
    redis.call('RENAME', KEYS[i + formats], KEYS[i])
    redis.call('EXPIRE', KEYS[i], ttl)
  end
end
if target == 'succeeded' then
  if ARGV[5] ~= '@uploads' then
    for i = 3, #KEYS do
      redis.call('SET', KEYS[i], ARGV[i + 2], 'EX', ttl)
    end
  end
  redis.call('HSET', KEYS[1], 'result', ARGV[4])
  if redis.call('HEXISTS', KEYS[1], 'progress') == 1 then
    redis.call('HSET', KEYS[1], 'progress', '1')
  end
elseif target == 'failed' then
  redis.call('HSET', KEYS[1], 'error', ARGV[4])
end
return {'finished', conclude(ARGV[1], ttl, target)}
