-- The job ends as an identical one ended (same task, same input, and the task
-- is deterministic): with a copy of its result, or with its error. Written
-- once, as by `finish`; a cancel asked before this ran wins.
-- KEYS[3]: the other job's hash; KEYS[4..3+n]: this job's result keys, one per
-- format; KEYS[4+n..3+2n]: the other job's, in the same order.
-- ARGV: channel, result_ttl, and 'at_submission' for a job just made: it is
-- queued, not running, and only a success answers it (a failure is shared
-- with jobs that waited on it, never with later ones).
-- Returns {outcome, job fields}: outcome 'finished', 'terminal', 'missing', or
-- 'unavailable' (the other job, or a result of it, is gone or not finished).
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
local other = redis.call('HMGET', KEYS[3], 'status', 'result', 'error')
if at_submission and other[1] ~= 'succeeded' then return {'unavailable', {}} end
local formats = (#KEYS - 3) / 2
if other[1] == 'succeeded' then
  for i = 1, formats do
    if redis.call('EXISTS', KEYS[3 + formats + i]) == 0 then return {'unavailable', {}} end
  end
  if at_submission then redis.call('HSET', KEYS[1], 'started_at', now()) end
  for i = 1, formats do
    redis.call('COPY', KEYS[3 + formats + i], KEYS[3 + i], 'REPLACE')
    redis.call('EXPIRE', KEYS[3 + i], ttl)
  end
  redis.call('HSET', KEYS[1], 'result', other[2])
  if redis.call('HEXISTS', KEYS[1], 'progress') == 1 then
    redis.call('HSET', KEYS[1], 'progress', '1')
  end
elseif other[1] == 'failed' then
  redis.call('HSET', KEYS[1], 'error', other[3])
else
  return {'unavailable', {}}
end
return {'finished', conclude(ARGV[1], ttl, other[1])}
