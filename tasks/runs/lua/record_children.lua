-- Records batches of a child kind published within a run (the task fetching the children of
-- a parent batch, or the batches of children it collected): counted once per seq.
--! include run_lib
-- KEYS[1] run           hash: the run record
-- KEYS[2] enqueued      set: seqs of the batches published
-- KEYS[3] lock          string: the id of the run that holds (source, kind)
-- KEYS[4] metrics       hash: the counters
-- KEYS[5] active        sorted set: runs not yet ended -> start time
-- ARGV[1] batches       JSON list: the seqs published
-- ARGV[2] n_items       child items in them (0 for the fetching task)
-- ARGV[3] kind          the child kind (its counts: fields 'child.{kind}.{count}',
--                       keys.child_field)
-- ARGV[4] now           seconds since the epoch
-- ARGV[5] run_id
-- ARGV[6] lock_seconds  the lock is renewed for this long
-- ARGV[7] incomplete    why some paging of children may have missed some ('' if not)
-- Returns 1; 0 when the run record is gone; -1 when the run was started on another Redis
-- server (restarted or failed over since: the run is failed, nothing recorded).
local run, enqueued, lock, metrics, active = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local n_items, kind, now = tonumber(ARGV[2]), ARGV[3], ARGV[4]
local run_id, lock_seconds = ARGV[5], tonumber(ARGV[6])

if redis.call('HEXISTS', run, 'state') == 0 then return 0 end
if moved(run, lock, active, metrics, now) then return -1 end
local batches = cjson.decode(ARGV[1])
local added = enqueue(run, enqueued, batches)
if added > 0 then
  redis.call('HINCRBY', run, 'child.' .. kind .. '.batches_enqueued', added)
  if added == #batches and n_items > 0 then  -- published for the first time
    redis.call('HINCRBY', run, 'items_fetched', n_items)
    redis.call('HINCRBY', run, 'child.' .. kind .. '.items_fetched', n_items)
    metric(run, metrics, 'items_fetched', n_items)
  end
end
redis.call('HSET', run, 'updated_at', now)
if ARGV[7] ~= '' then redis.call('HSET', run, 'incomplete', ARGV[7]) end
if redis.call('GET', lock) == run_id then redis.call('EXPIRE', lock, lock_seconds) end
return 1
