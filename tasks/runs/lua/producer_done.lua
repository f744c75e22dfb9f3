-- A producer partition published its last page, or failed (an error ends the whole producer
-- side). The producer is done when every partition is (one, unless the kind was split).
--! include run_lib
-- KEYS[1] run              hash: the run record
-- KEYS[2] enqueued         set: seqs of the batches published
-- KEYS[3] done             set: seqs of the batches written
-- KEYS[4] failed           set: seqs of the batches dead-lettered
-- KEYS[5] partitions_done  set: the partitions that are done
-- KEYS[6] active           sorted set: runs not yet ended -> start time
-- KEYS[7] metrics          hash: the counters
-- ARGV[1] error            why the producer failed ('' for none)
-- ARGV[2] now              seconds since the epoch
-- ARGV[3] partition        the partition's index
-- Returns 1 when the caller finalizes the run, else 0; -1 when the run was started on another
-- Redis server (restarted or failed over since: the run is failed, nothing recorded).
local run, enqueued, done, failed, partitions_done = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local active, metrics = KEYS[6], KEYS[7]
local err, now, partition = ARGV[1], ARGV[2], ARGV[3]

if redis.call('HEXISTS', run, 'state') == 0 then return 0 end
if moved(run, nil, active, metrics, now) then return -1 end
redis.call('SADD', partitions_done, partition)
redis.call('HSET', run, 'updated_at', now)
if err ~= '' then redis.call('HSET', run, 'error', err) end
local parts = tonumber(redis.call('HGET', run, 'partitions') or '1')
if err == '' and redis.call('SCARD', partitions_done) < parts then return 0 end
redis.call('HSET', run, 'producer_done', '1')
return try_finalize(run, enqueued, done, failed)
