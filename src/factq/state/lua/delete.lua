-- Forget a finished job, its event log and its results now. (The caller then
-- frees the Idempotency-Key that made it and the stored outcome it answers
-- identical jobs with: they live in other slots.)
-- KEYS[3..]: the result keys. ARGV: owner.
-- Returns 'deleted', 'missing' (unknown or another owner's) or the live status.
local job = redis.call('HMGET', KEYS[1], 'status', 'owner')
if not job[1] or job[2] ~= ARGV[1] then return 'missing' end
if not TERMINAL[job[1]] then return job[1] end
redis.call('DEL', unpack(KEYS))
return 'deleted'
