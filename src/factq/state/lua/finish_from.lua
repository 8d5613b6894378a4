-- The job ends as an identical one ended (same task, same input, and the task
-- is deterministic): with a copy of its result, or with its error. Written
-- once, as by `finish`; a cancel asked before this ran wins. The other job
-- lives in another slot: the caller read its outcome and passes it here.
-- KEYS[3..]: this job's result keys, one per format.
-- ARGV: channel, result_ttl, 'at_submission' for a job just made (it is
-- queued, not running, and only a success answers it: a failure is shared
-- with jobs that waited on it, never with later ones), then the other job's
-- status, its summary, its error, and its result values in KEYS' order.
-- Returns {outcome, job fields}: outcome 'finished', 'terminal', 'missing', or
-- 'unavailable' (the other job did not end in a way that answers this one).
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', {}} end
if TERMINAL[status] then return {'terminal', redis.call('HGETALL', KEYS[1])} end
local at_submission = ARGV[3] == 'at_submission'
if status ~= (at_submission and 'queued' or 'running') then
  return redis.error_reply('a ' .. status .. ' job cannot finish')
end
local ttl = tonumber(ARGV[2])
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then
  return {'finished', conclude(ARGV[1], ttl, 'cancelled')}
end
local other = ARGV[4]
if at_submission and other ~= 'succeeded' then return {'unavailable', {}} end
if other == 'succeeded' then
  if at_submission then redis.call('HSET', KEYS[1], 'started_at', now()) end
  for i = 3, #KEYS do
    redis.call('SET', KEYS[i], ARGV[i + 4], 'EX', ttl)
  end
  redis.call('HSET', KEYS[1], 'result', ARGV[5])
  if redis.call('HEXISTS', KEYS[1], 'progress') == 1 then
    redis.call('HSET', KEYS[1], 'progress', '1')
  end
elseif other == 'failed' then
  redis.call('HSET', KEYS[1], 'error', ARGV[6])
else
  return {'unavailable', {}}
end
return {'finished', conclude(ARGV[1], ttl, other)}
