-- A worker takes the next message of its queues and records it as held, in one step.
-- kombu's Redis transport takes with BRPOP and records only afterwards (MULTI ZADD/HSET), so a
-- node that dies in between, or is frozen while its BRPOP waits in Redis, holds a message no
-- record has. Here the message is recorded first and removed last: a script that fails half
-- way (a full Redis refusing the HSET) leaves it in its queue.
-- KEYS[1] unacked        hash: delivery tag -> JSON [message, exchange, routing key] (kombu's)
-- KEYS[2] unacked_index  sorted set: delivery tag -> when taken (kombu's visibility timeout)
-- KEYS[3] node_tags      set: delivery tags the node holds (tasks/worker/liveness.py)
-- KEYS[4..] queues       the lists to take from, first first (kombu's BRPOP order: each
--                        priority step, then the queues in their fair cycle)
-- ARGV[1] now            the worker's clock (kombu compares the index with it)
-- ARGV[2] record_node    '1': also add the tag to node_tags (a worker node); '0': not
-- Returns {queue, message}, or nil when every list is empty. A message that is not kombu's
-- JSON (no delivery tag) is returned unrecorded, as kombu's BRPOP would (kombu then fails
-- to read it the same way).
local unacked, unacked_index, node_tags = KEYS[1], KEYS[2], KEYS[3]
local now, record_node = tonumber(ARGV[1]), ARGV[2] == '1'

-- The message's properties. kombu writes them last, so decoding from their key to the end
-- reads a few hundred bytes instead of the whole message, whose body is most of it (a
-- 400 KB page decoded here cost Redis more than the rest of the batch's commands). The key
-- cannot be inside a string (its quotes would be escaped there); in a body written as JSON
-- (tasks/worker/wire.py: EMBEDDED) it can be a key deeper than the envelope's, and what
-- follows it is then no whole object: any shape but kombu's decodes whole. The last
-- occurrence is looked for in the message's last 8 KB first: searching the whole 500 KB for
-- it (every quote of the body a candidate) cost Redis 0.4 ms a batch.
local function last(message, from)
  local at = nil
  while true do
    local found = string.find(message, '"properties":', from, true)
    if not found then return at end
    at, from = found, found + 1
  end
end

local function properties(message)
  local at = last(message, math.max(1, #message - 8192)) or last(message, 1)
  if at then
    local ok, tail = pcall(cjson.decode, '{' .. string.sub(message, at))
    if ok and type(tail) == 'table' and type(tail['properties']) == 'table' then
      return tail['properties']
    end
  end
  local ok, payload = pcall(cjson.decode, message)
  return ok and type(payload) == 'table' and payload['properties']
end

for i = 4, #KEYS do
  local queue = KEYS[i]
  local message = redis.call('LINDEX', queue, -1)  -- the one RPOP takes
  if message then
    local props = properties(message)
    local tag = type(props) == 'table' and props['delivery_tag']
    if type(tag) == 'string' then
      local info = type(props['delivery_info']) == 'table' and props['delivery_info'] or {}
      -- kombu's record, with the message as it came (cjson would round its big numbers).
      local record = '[' .. message .. ',' .. cjson.encode(info['exchange'] or '') .. ','
        .. cjson.encode(info['routing_key'] or '') .. ']'
      redis.call('HSET', unacked, tag, record)
      redis.call('ZADD', unacked_index, now, tag)
      if record_node then redis.call('SADD', node_tags, tag) end
    end
    redis.call('RPOP', queue)
    return {queue, message}
  end
end
return nil
