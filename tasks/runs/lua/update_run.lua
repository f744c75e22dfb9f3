-- Sets fields of a run record that exists. A record that is gone (Redis lost it) is not
-- brought back as a record without a state, nor without its TTL.
-- KEYS[1] run        hash: the run record
-- ARGV[1] fields     JSON object: field -> text
-- Returns 1, or 0 when the record is gone.
local run = KEYS[1]

if redis.call('HEXISTS', run, 'state') == 0 then return 0 end
for k, v in pairs(cjson.decode(ARGV[1])) do redis.call('HSET', run, k, v) end
return 1
