-- Record one webhook delivery attempt in the job's log (the last 50 kept).
-- Nothing happens to a job that is gone: the log never revives it.
-- ARGV: the attempt as JSON
local log = redis.call('HGET', KEYS[1], 'webhook_log')
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local entries = log and cjson.decode(log) or {}
table.insert(entries, cjson.decode(ARGV[1]))
while #entries > 50 do table.remove(entries, 1) end
redis.call('HSET', KEYS[1], 'webhook_log', cjson.encode(entries))
return true
