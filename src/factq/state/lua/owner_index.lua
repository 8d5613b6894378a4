-- Index new jobs under their owner: a sorted set scored by the owner's counter,
-- so that entries are unique and in submission order.
-- KEYS: the owner's index, its counter, and its set of jobs in flight.
-- ARGV: keep seconds, most entries kept, '1' to track jobs in flight, job ids.
-- Returns the counter's new value.
local ids = {unpack(ARGV, 4)}
local last = redis.call('INCRBY', KEYS[2], #ids)
local first = last - #ids
for start = 1, #ids, 500 do
  local args = {}
  for i = start, math.min(start + 499, #ids) do
    args[#args + 1] = first + i
    args[#args + 1] = ids[i]
  end
  redis.call('ZADD', KEYS[1], unpack(args))
end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[2]) - 1)
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
if ARGV[3] == '1' then
  for start = 1, #ids, 500 do
    redis.call('SADD', KEYS[3], unpack(ids, start, math.min(start + 499, #ids)))
  end
  redis.call('EXPIRE', KEYS[3], ARGV[1])
end
return last
