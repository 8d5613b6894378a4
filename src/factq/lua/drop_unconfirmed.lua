-- Forget a job that is still provisional: queued, and never confirmed (its TTL
-- still runs), because the request that made it failed before it could know
-- whether its message reached the queue. A message that did arrives to find
-- no job and is dropped. Any other job is left alone.
-- Returns 1 when the job was dropped, else 0.
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
if redis.call('PTTL', KEYS[1]) < 0 then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
