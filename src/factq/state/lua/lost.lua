-- The running job's pool process died: remember it, so that if this was its
-- last attempt it fails as worker_lost rather than too_many_attempts.
if redis.call('HGET', KEYS[1], 'status') == 'running' then
  redis.call('HSET', KEYS[1], 'lost', '1')
end
return true
