-- A running job reports how far it is (0..1). Ignored unless it is running.
-- ARGV: channel, fraction
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return false end
redis.call('HSET', KEYS[1], 'progress', ARGV[2])
emit(ARGV[1], 'progress')
return true
