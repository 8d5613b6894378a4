-- The lease on one computation (a task on one input), so that identical jobs
-- running at once share it: held by one job's id, for ttl milliseconds at a
-- time, renewed while it computes. KEYS[1]: the lease.
-- ARGV: 'claim', 'renew' or 'release'; the job id; ttl in ms.
-- claim: returns the holder, this job if it holds it now (also when its own
-- earlier attempt held it, as after a lost worker). renew, release: 1 if this
-- job held it, else 0.
local holder = redis.call('GET', KEYS[1])
if ARGV[1] == 'claim' then
  if holder and holder ~= ARGV[2] then return holder end
  redis.call('SET', KEYS[1], ARGV[2], 'PX', tonumber(ARGV[3]))
  return ARGV[2]
end
if holder ~= ARGV[2] then return 0 end
if ARGV[1] == 'renew' then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
else
  redis.call('DEL', KEYS[1])
end
return 1
