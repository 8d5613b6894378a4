-- Shared by every state-change script (prepended when the script is loaded).
-- KEYS[1] is the job's hash and KEYS[2] its event stream in every script; every
-- key a script touches is in their slot (see factq/state/keys.py).

local TERMINAL = {succeeded = true, failed = true, cancelled = true}

-- The server's clock, so that every process stamps times from one source.
local function now()
  local t = redis.call('TIME')
  return string.format('%d.%06d', t[1], t[2])
end

local function job_map(flat)
  local map = {}
  for i = 1, #flat, 2 do map[flat[i]] = flat[i + 1] end
  return map
end

-- Keep the job and its event log for ttl seconds, or for as long as it is
-- live when ttl is 0.
local function keep(ttl)
  for i = 1, 2 do
    if ttl > 0 then redis.call('EXPIRE', KEYS[i], ttl) else redis.call('PERSIST', KEYS[i]) end
  end
end

-- Fields that never leave Redis (a webhook's full URL may carry credentials:
-- the job shows it redacted, and only the deliveries stream holds it).
local INTERNAL = {'owner', 'webhook_stream', 'webhook_url', 'lost', 'idempotency_key'}

-- Count the change, append the job's new state to its event log and publish
-- it: the write and its event happen together or not at all. kind is what
-- changed: queued, started, progress, completed or cancel_requested; a job
-- whose webhook asked for that kind also gets a delivery queued, in the same
-- step, for the workers to send.
local function emit(channel, kind)
  local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
  local flat = redis.call('HGETALL', KEYS[1])
  local job = job_map(flat)
  local stream = job['webhook_stream']
  local url = job['webhook_url']
  for _, field in ipairs(INTERNAL) do job[field] = nil end
  local encoded = cjson.encode(job)
  redis.call('XADD', KEYS[2], seq .. '-0', 'job', encoded)
  -- A channel with a hash tag is a shard's channel, on Redis Cluster.
  redis.call(string.find(channel, '{', 1, true) and 'SPUBLISH' or 'PUBLISH', channel,
    '{"job_id":' .. cjson.encode(job['id']) .. ',"seq":' .. seq .. ',"job":' .. encoded .. '}')
  if stream and job['webhook'] then
    local wanted = cjson.decode(job['webhook'])['events']
    for _, event in ipairs(wanted) do
      if event == kind then
        redis.call('XADD', stream, 'MAXLEN', '~', 100000, '*',
          'job_id', job['id'], 'type', 'job.' .. kind, 'seq', seq, 'job', encoded,
          'url', url or '')
      end
    end
  end
  return flat
end

-- The job ends with status target (its result or error already written):
-- stamped, logged and published once, then kept ttl seconds.
local function conclude(channel, ttl, target)
  redis.call('HSET', KEYS[1], 'status', target, 'finished_at', now())
  local flat = emit(channel, 'completed')
  keep(ttl)
  return flat
end
