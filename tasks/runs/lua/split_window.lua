-- Splits a time window of a sliced run into pieces at once: the partition keeps the first,
-- each other piece becomes a new partition (numbered after every other, in order), to be
-- claimed (claim_windows). When the run has room for fewer new partitions than pieces, it
-- takes as many as fit and the last one taken reaches to the window's end.
-- Only a partition that still reads the window given is split: a second reader of it (a
-- redelivered task) that looked at the same first page finds its window changed, and adds
-- nothing (it reads the partition's window again).
-- KEYS[1] run        hash: the run record ('partitions', 'window:{i}' (JSON [a, b]),
--                    'since:{i}', 'windows_split': how many windows were split, once each
--                    whatever the pieces; the field templates are keys.py's window_field
--                    and since_field)
-- ARGV[1] partition  the window's partition
-- ARGV[2] most       partitions the run may have
-- ARGV[3..] bounds   a, c1, ..., b: the window's start, the cuts between its pieces (in
--                    order, at least one), its end; integers
-- Returns {first new partition, how many were added}; {-1, 0} when the run record is gone,
-- {-2, 0} when it has `most` partitions already, {-3, 0} when the partition's window is not
-- [a, b] (split already); nothing is changed then.
local run, partition, most = KEYS[1], ARGV[1], tonumber(ARGV[2])
local bounds = {}
for i = 3, #ARGV do bounds[#bounds + 1] = ARGV[i] end
local a, b = bounds[1], bounds[#bounds]

-- A window as json.dumps writes it (Windows.cut): the windows read back are parsed as JSON.
local function window(lo, hi) return '[' .. lo .. ', ' .. hi .. ']' end

if redis.call('HEXISTS', run, 'state') == 0 then return {-1, 0} end
local current = redis.call('HGET', run, 'window:' .. partition) or ''
local lo, hi = string.match(current, '^%[%s*(%-?%d+)%s*,%s*(%-?%d+)%s*%]$')
if lo ~= a or hi ~= b then return {-3, 0} end
local parts = tonumber(redis.call('HGET', run, 'partitions'))
if parts >= most then return {-2, 0} end
local added = math.min(#bounds - 2, most - parts)
redis.call('HSET', run, 'window:' .. partition, window(a, bounds[2]))
for i = 1, added do
  local new, to = parts + i - 1, bounds[i + 2]
  if i == added then to = b end
  redis.call('HSET', run, 'window:' .. new, window(bounds[i + 1], to), 'since:' .. new, 'null')
end
redis.call('HSET', run, 'partitions', parts + added)
redis.call('HINCRBY', run, 'windows_split', 1)
return {parts, added}
