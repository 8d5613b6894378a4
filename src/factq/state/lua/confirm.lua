-- The job's message is safely in the queue: keep the job while it is live.
-- A job that already finished keeps the TTL its completion gave it.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
if not TERMINAL[status] then keep(0) end
return status
