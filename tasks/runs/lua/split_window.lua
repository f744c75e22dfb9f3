-- Splits a time window of a sliced run in two: the partition keeps the first half, a new
-- partition (numbered after every other) gets the second, to be claimed (claim_windows).
-- KEYS[1] run        hash: the run record ('partitions', 'window:{i}', 'since:{i}',
--                    'windows_split': how many were split)
-- ARGV[1] partition  the window's partition
-- ARGV[2] first      JSON: the half it keeps
-- ARGV[3] second     JSON: the half the new partition reads
-- ARGV[4] most       partitions the run may have
-- Returns the new partition; -1 when the run record is gone, -2 when it has `most` already.
local run, partition, first, second = KEYS[1], ARGV[1], ARGV[2], ARGV[3]

if redis.call('HEXISTS', run, 'state') == 0 then return -1 end
if tonumber(redis.call('HGET', run, 'partitions')) >= tonumber(ARGV[4]) then return -2 end
local new = redis.call('HINCRBY', run, 'partitions', 1) - 1
redis.call('HINCRBY', run, 'windows_split', 1)
redis.call('HSET', run, 'window:' .. partition, first, 'window:' .. new, second,
           'since:' .. new, 'null')
return new
