-- Forget a finished job, its event log and its results now, and free the
-- Idempotency-Key that made it, so that the same key makes a new job.
-- KEYS[3..n]: the result keys; KEYS[n+1], when the job was made with a key:
-- that key's record (as the job names it in 'idempotency_key').
-- ARGV: owner, and the number of result keys.
-- Returns 'deleted', 'missing' (unknown or another owner's) or the live status.
local job = redis.call('HMGET', KEYS[1], 'status', 'owner', 'id', 'idempotency_key')
if not job[1] or job[2] ~= ARGV[1] then return 'missing' end
if not TERMINAL[job[1]] then return job[1] end
local results = tonumber(ARGV[2])
local record = KEYS[3 + results]
if record and record == job[4] then
  -- The record names the job it made: 'fingerprint:job_id:claimed_at'.
  local claim = redis.call('GET', record)
  if claim and string.find(claim, ':' .. job[3] .. ':', 1, true) then
    redis.call('DEL', record)
  end
end
redis.call('DEL', unpack(KEYS, 1, 2 + results))
return 'deleted'
