-- Forget a finished job, its event log and its results now; free the
-- Idempotency-Key that made it, so that the same key makes a new job, and
-- the stored outcome it answers identical jobs with.
-- KEYS[3..2+n]: the result keys; then, when ARGV[3] is '1', the key's record
-- (as the job names it in 'idempotency_key'); then, when ARGV[4] is '1', the
-- key naming the job whose outcome answers its computation.
-- ARGV: owner, n (the number of result keys), and those two flags.
-- Returns 'deleted', 'missing' (unknown or another owner's) or the live status.
local job = redis.call('HMGET', KEYS[1], 'status', 'owner', 'id', 'idempotency_key')
if not job[1] or job[2] ~= ARGV[1] then return 'missing' end
if not TERMINAL[job[1]] then return job[1] end
local results = tonumber(ARGV[2])
local extra = 3 + results
if ARGV[3] == '1' then
  local record = KEYS[extra]
  extra = extra + 1
  -- The record names the job it made: 'fingerprint:job_id:claimed_at'.
  local claim = redis.call('GET', record)
  if record == job[4] and claim and string.find(claim, ':' .. job[3] .. ':', 1, true) then
    redis.call('DEL', record)
  end
end
if ARGV[4] == '1' and redis.call('GET', KEYS[extra]) == job[3] then
  redis.call('DEL', KEYS[extra])
end
redis.call('DEL', unpack(KEYS, 1, 2 + results))
return 'deleted'
