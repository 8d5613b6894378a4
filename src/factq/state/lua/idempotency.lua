-- An Idempotency-Key's record: 'fingerprint:job_id:claimed_at', the request
-- it was first used with, the job id reserved for it, and when (the server's
-- clock). KEYS[1]: the record. ARGV[1]: what to do.
--   claim, fingerprint, job id, ttl: reserve the key if it is free.
--   take_over, value found, fingerprint, job id, ttl: reserve it again, for a
--     new job, if it still holds the value found (compare and set).
--     Both return {'claimed', new value, now} or {'held', value or '', now}.
--   release, value: free the key if it still holds that value; 1 if it did.
--   forget, job id: free the key if it names that job (deleted); 1 if it did.
local current = redis.call('GET', KEYS[1])
local mode = ARGV[1]
if mode == 'release' then
  if current ~= ARGV[2] then return 0 end
  redis.call('DEL', KEYS[1])
  return 1
end
if mode == 'forget' then
  if not (current and string.find(current, ':' .. ARGV[2] .. ':', 1, true)) then return 0 end
  redis.call('DEL', KEYS[1])
  return 1
end
local at = now()
local first = 2
if mode == 'take_over' then
  if current ~= ARGV[2] then return {'held', current or '', at} end
  first = 3
elseif current then
  return {'held', current, at}
end
local value = ARGV[first] .. ':' .. ARGV[first + 1] .. ':' .. at
redis.call('SET', KEYS[1], value, 'EX', tonumber(ARGV[first + 2]))
return {'claimed', value, at}
