-- A new job, queued. It lives only provisional_ttl seconds until `confirm`
-- runs after the broker confirmed its message: a job whose publish never
-- completed vanishes on its own.
-- ARGV: channel, provisional_ttl, job_id, task, input_json, owner, webhook
-- JSON as it is shown (its URL redacted) and the stream of deliveries to send
-- ('' for none), deadline in seconds from now ('' for none), the record of
-- the Idempotency-Key that made it ('' for none: named in the job, so that
-- forgetting the job can free the key), and the webhook's full URL.
-- Returns the job's fields; false when the id is taken.
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local created = now()
redis.call('HSET', KEYS[1],
  'id', ARGV[3], 'task', ARGV[4], 'input', ARGV[5], 'owner', ARGV[6],
  'status', 'queued', 'created_at', created, 'attempts', 0, 'cancel_requested', 0)
if ARGV[10] ~= '' then redis.call('HSET', KEYS[1], 'idempotency_key', ARGV[10]) end
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[1], 'webhook', ARGV[7], 'webhook_stream', ARGV[8],
    'webhook_url', ARGV[11])
end
if ARGV[9] ~= '' then
  redis.call('HSET', KEYS[1], 'deadline_at',
    string.format('%.6f', tonumber(created) + tonumber(ARGV[9])))
end
local flat = emit(ARGV[1], 'queued')
keep(tonumber(ARGV[2]))
return flat
