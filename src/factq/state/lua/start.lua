-- A worker begins (or, after a lost worker, begins again) to run the job.
-- Returns {outcome, job fields}: outcome 'started', 'terminal' (nothing to
-- do), 'cancelled' (a cancel was asked while it was held), 'expired' (still
-- queued past its deadline: failed, never run) or 'missing'.
-- ARGV: channel, result_ttl
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', {}} end
if TERMINAL[status] then return {'terminal', redis.call('HGETALL', KEYS[1])} end
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then
  return {'cancelled', conclude(ARGV[1], tonumber(ARGV[2]), 'cancelled')}
end
local at = now()
local deadline = redis.call('HGET', KEYS[1], 'deadline_at')
if status == 'queued' and deadline and tonumber(at) > tonumber(deadline) then
  redis.call('HSET', KEYS[1], 'error',
    cjson.encode({type = 'expired', message = 'not started before its deadline'}))
  return {'expired', conclude(ARGV[1], tonumber(ARGV[2]), 'failed')}
end
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', at)
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HDEL', KEYS[1], 'progress', 'lost')
local flat = emit(ARGV[1], 'started')
keep(0)
return {'started', flat}
