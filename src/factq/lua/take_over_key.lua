-- Point an Idempotency-Key whose job was never made at a new job, unless
-- another request changed it first (compare and set).
-- KEYS[1]: the key's record. ARGV: the value found, the new value, ttl.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
return 1
