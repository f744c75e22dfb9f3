-- Records a page the producer published (as batches) or found empty, and its checkpoint.
--! include run_lib
-- Called by Progress.record_page (tasks/runs/progress.py): page_keys and page_args build the
-- KEYS and ARGV below from a PageRecord, by these names and in this order (a unit test holds
-- the two to each other). The record's field names are keys.py's templates: ARGV[7] and
-- ARGV[14] come ready-made from it; the seen hash's 'items:' is keys.SEEN_ITEMS.
-- KEYS[1] run           hash: the run record
-- KEYS[2] enqueued      set: seqs of the batches published
-- KEYS[3] lock          string: the id of the run that holds (source, kind)
-- KEYS[4] metrics       hash: the counters
-- KEYS[5] seen          hash: what a page asked for next (or its items' digest) -> that page
-- KEYS[6] empty         set: seqs of the pages that came back empty
-- KEYS[7] active        sorted set: runs not yet ended -> start time
-- ARGV[1]  batches      JSON list: the page's batch seqs (empty for a page without items)
-- ARGV[2]  n_items      items on the page
-- ARGV[3]  checkpoint   JSON: where the producer resumes after this page
-- ARGV[4]  now          seconds since the epoch
-- ARGV[5]  run_id
-- ARGV[6]  lock_seconds the lock is renewed for this long
-- ARGV[7]  field        the record's field for this partition's checkpoint ('checkpoint:{i}',
--                       keys.checkpoint_field)
-- ARGV[8]  mark         digest of the state the checkpoint asks for next ('' for none)
-- ARGV[9]  next_seq     the page that asks for it
-- ARGV[10] total        the API's count of items ('' when it gave none)
-- ARGV[11] truncated    why the paging may have missed items ('' when it did not)
-- ARGV[12] page         this page's seq
-- ARGV[13] items_mark   digest of the page's items ('' for an empty page)
-- ARGV[14] newest_field the record's field for this partition's newest cursor value
--                       ('mark:{i}', keys.mark_field; '' when the page raised it not)
-- ARGV[15] newest       that value (JSON)
-- Returns {1, pages with items so far}; {0} when the run record is gone; {-1, page} when that
-- page already asked for the same state (a cycle); {-2, page} when that page held the very
-- same items (an API that ignores the cursor it hands out); {-3} when the run was started on
-- another Redis server (restarted or failed over since: the run is failed, nothing recorded).
local run, enqueued, lock, metrics, seen, empty = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local active = KEYS[7]
local n_items, now, run_id, lock_seconds = tonumber(ARGV[2]), ARGV[4], ARGV[5], tonumber(ARGV[6])
local field, mark, next_seq, total, truncated = ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local page, items_mark = ARGV[12], ARGV[13]

if redis.call('HEXISTS', run, 'state') == 0 then return {0} end
if moved(run, lock, active, metrics, now) then return {-3} end
local batches = cjson.decode(ARGV[1])
if #batches == 0 then redis.call('SADD', empty, page) end  -- never asked for again
local added = enqueue(run, enqueued, batches)
if added > 0 then
  if added == #batches then  -- a page seen for the first time (not a redelivery)
    redis.call('HINCRBY', run, 'pages', 1)
    redis.call('HINCRBY', run, 'items_fetched', n_items)
    metric(run, metrics, 'pages', 1)
    metric(run, metrics, 'items_fetched', n_items)
    if total ~= '' then redis.call('HINCRBY', run, 'items_expected', tonumber(total)) end
  end
end
if truncated ~= '' then redis.call('HSET', run, 'incomplete', truncated) end
redis.call('HSET', run, field, ARGV[3], 'updated_at', now)
if ARGV[14] ~= '' then redis.call('HSET', run, ARGV[14], ARGV[15]) end
if redis.call('GET', lock) == run_id then redis.call('EXPIRE', lock, lock_seconds) end
-- The cycle checks come last: the page that closes a cycle was published and is counted.
if items_mark ~= '' then
  local prev = redis.call('HGET', seen, 'items:' .. items_mark)
  if prev and prev ~= page then return {-2, tonumber(prev)} end
  redis.call('HSET', seen, 'items:' .. items_mark, page)
end
if mark ~= '' then
  local prev = redis.call('HGET', seen, mark)
  if prev and prev ~= next_seq then return {-1, tonumber(prev)} end
  redis.call('HSET', seen, mark, next_seq)
end
return {1, tonumber(redis.call('HGET', run, 'pages') or '0')}
