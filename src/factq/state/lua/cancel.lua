-- Cancel a job: a queued job is cancelled at once and will never run; a
-- running job is flagged, and its worker ends the computation and finishes it
-- as cancelled. Returns {outcome, job fields}: outcome 'cancelled',
-- 'requested' (flagged, or already flagged), 'terminal' or 'missing'.
-- The flag is also published on the control channel, for the worker that
-- holds the job. ARGV: channel, result_ttl, owner, control channel
local job = redis.call('HMGET', KEYS[1], 'status', 'owner', 'cancel_requested')
if not job[1] or job[2] ~= ARGV[3] then return {'missing', {}} end
if TERMINAL[job[1]] then return {'terminal', redis.call('HGETALL', KEYS[1])} end
if job[1] == 'queued' then
  return {'cancelled', conclude(ARGV[1], tonumber(ARGV[2]), 'cancelled')}
end
if job[3] == '1' then return {'requested', redis.call('HGETALL', KEYS[1])} end
redis.call('HSET', KEYS[1], 'cancel_requested', '1')
local flat = emit(ARGV[1], 'cancel_requested')
redis.call('PUBLISH', ARGV[4], redis.call('HGET', KEYS[1], 'id'))
return {'requested', flat}
