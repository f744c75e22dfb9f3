-- A batch of webhook events was written (tasks/runs/webhooks.py, WebhookLog.record): counted
-- once per batch id however often it is delivered, its rejected events kept, its dead letter
-- (a batch `sluice failed retry` sent again) dropped, all at once, as the run record's
-- scripts count a run's batches: a worker lost midway counts a batch wholly or not at all.
-- KEYS[1] counted    string: the batch was counted (keys.webhook_batch); expires after ttl
-- KEYS[2] metrics    hash: the counters
-- KEYS[3] rejected   list: JSON records of the source's rejected events (capped)
-- KEYS[4] dead       hash: batch id -> JSON of a dead-lettered batch of the source
-- ARGV[1] batch_id
-- ARGV[2] ttl        seconds the batch is remembered as counted
-- ARGV[3] keep       rejected-event records kept per source
-- ARGV[4] rejected   JSON list of the rejected events' records, each as JSON text
-- ARGV[5..] counts   pairs: a metrics field (tasks/runs/metrics.py's field) and what it adds
-- Returns 1; 0 when the batch was counted before (a redelivery): nothing is changed then.
local counted, metrics, rejected, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local batch_id, ttl, keep = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])

if not redis.call('SET', counted, '1', 'NX', 'EX', ttl) then return 0 end
for i = 5, #ARGV, 2 do redis.call('HINCRBY', metrics, ARGV[i], ARGV[i + 1]) end
-- Each record is JSON text already: cjson would round its big numbers on the way.
for _, rec in ipairs(cjson.decode(ARGV[4])) do redis.call('RPUSH', rejected, rec) end
redis.call('LTRIM', rejected, -keep, -1)
redis.call('HDEL', dead, batch_id)
return 1
