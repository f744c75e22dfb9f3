-- A worker node's heartbeat, on Redis's clock (machines may disagree).
-- KEYS[1] nodes      sorted set: node -> its last heartbeat
-- ARGV[1] node       the node's name
local nodes, node = KEYS[1], ARGV[1]

local t = redis.call('TIME')
redis.call('ZADD', nodes, tonumber(t[1]) + tonumber(t[2]) / 1000000, node)
