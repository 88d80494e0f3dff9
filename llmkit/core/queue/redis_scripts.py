"""The Lua scripts of RedisPriorityQueue: each queue step runs as one atomic script on the Redis server."""

from __future__ import annotations

# Score = level * STRIDE + sequence: one sorted set orders levels first and arrival within a level, and the
# largest score (3 * 1e13 + sequence) stays an exact integer in a double.
STRIDE = 10**13

# Every script gets the same keys of one queue:
#   1 items   sorted set, queued id -> score
#   2 data    hash, id -> "<enqueued µs>:<payload>", for items queued or in flight
#   3 ready   list of wake-up tokens for consumers blocked in BLPOP
#   4 leases  sorted set, in-flight id -> lease deadline in µs of the Redis clock
#   5 held    hash, in-flight id -> "<token>:<score>" (the score puts it back in its place)
#   6 tries   hash, id -> deliveries so far, for items ever taken with a lease
#   7 seq     counter behind the scores
KEY_PARTS = ("items", "data", "ready", "leases", "held", "tries", "seq")

# Deadlines are read from the server's TIME, so consumers on machines whose clocks disagree share leases.
# Every script but PUT first queues again the items whose lease has run out: a consumer that died is
# covered by whichever consumer (or stats reader) touches the queue next, with no sweeper process.
# Lua numbers go through string.format('%.0f') before reaching Redis: tostring would round them to 14 digits.
PRELUDE = """
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function requeue(id)
  local score = string.match(redis.call('HGET', KEYS[5], id), ':(.*)$')
  redis.call('HDEL', KEYS[5], id)
  redis.call('ZREM', KEYS[4], id)
  redis.call('ZADD', KEYS[1], score, id)
  redis.call('LPUSH', KEYS[3], '1')
  redis.call('LTRIM', KEYS[3], 0, 99)
end
local function reclaim(now)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', string.format('%.0f', now))) do
    requeue(id)
  end
end
local function holds(id, token)
  local held = redis.call('HGET', KEYS[5], id)
  return held and string.match(held, '^[^:]*') == token
end
"""

# ARGV: id, level, payload, capacity, stride. Returns the position, -1 for a duplicate, -2 when full.
# Duplicate check, capacity check and insert happen in one script, so concurrent producers cannot overfill.
PUT_LUA = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('HEXISTS', KEYS[5], ARGV[1]) == 1 then return -1 end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return -2 end
local seq = redis.call('INCR', KEYS[7])
local t = redis.call('TIME')
local score = string.format('%.0f', tonumber(ARGV[2]) * tonumber(ARGV[5]) + seq)
redis.call('ZADD', KEYS[1], score, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], t[1] .. string.format('%06d', tonumber(t[2])) .. ':' .. ARGV[3])
redis.call('LPUSH', KEYS[3], '1')
redis.call('LTRIM', KEYS[3], 0, 99)
return redis.call('ZRANK', KEYS[1], ARGV[1])
"""

# ARGV: lease in µs (0: none), token. Takes the first item, with its payload, to exactly one consumer:
# returns {id, score, value, deliveries}; or, when nothing is queued, the µs until the next lease runs out
# (-1 if none), so a waiting consumer looks again then. Wake-up tokens only matter while items wait, so
# an emptied queue drops them rather than waking consumers for nothing.
POP_LUA = (
    PRELUDE
    + """
local now = now_us()
reclaim(now)
local popped = redis.call('ZPOPMIN', KEYS[1])
if #popped == 0 then
  local next_lease = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
  if next_lease[2] then return tonumber(next_lease[2]) - now end
  return -1
end
local id, score = popped[1], popped[2]
local value = redis.call('HGET', KEYS[2], id)
local lease = tonumber(ARGV[1])
local deliveries
if lease > 0 then
  deliveries = redis.call('HINCRBY', KEYS[6], id, 1)
  redis.call('ZADD', KEYS[4], string.format('%.0f', now + lease), id)
  redis.call('HSET', KEYS[5], id, ARGV[2] .. ':' .. score)
else
  deliveries = (tonumber(redis.call('HGET', KEYS[6], id)) or 0) + 1
  redis.call('HDEL', KEYS[2], id)
  redis.call('HDEL', KEYS[6], id)
end
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('DEL', KEYS[3]) end
return {id, score, value, deliveries}
"""
)

# ARGV: id, score, value, deliveries, token. Puts back, in its place, an item popped by a consumer whose
# cancel redis-py lost. That delivery reached nobody, so it is not counted.
RESTORE_LUA = (
    PRELUDE
    + """
local id = ARGV[1]
if ARGV[5] ~= '' then
  if not holds(id, ARGV[5]) then return 0 end
  redis.call('ZREM', KEYS[4], id)
  redis.call('HDEL', KEYS[5], id)
elseif redis.call('ZSCORE', KEYS[1], id) or redis.call('HEXISTS', KEYS[5], id) == 1 then
  return 0
end
local before = tonumber(ARGV[4]) - 1
if before > 0 then redis.call('HSET', KEYS[6], id, before) else redis.call('HDEL', KEYS[6], id) end
redis.call('ZADD', KEYS[1], ARGV[2], id)
redis.call('HSET', KEYS[2], id, ARGV[3])
redis.call('LPUSH', KEYS[3], '1')
redis.call('LTRIM', KEYS[3], 0, 99)
return 1
"""
)

# ARGV: id, token. 1 if the lease held the item, which is now gone for good.
ACK_LUA = (
    PRELUDE
    + """
reclaim(now_us())
if not holds(ARGV[1], ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[6], ARGV[1])
return 1
"""
)

# ARGV: id, token, lease in µs. 1 if the lease held the item; its deadline is then now + lease.
EXTEND_LUA = (
    PRELUDE
    + """
local now = now_us()
reclaim(now)
if not holds(ARGV[1], ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[4], 'XX', string.format('%.0f', now + tonumber(ARGV[3])), ARGV[1])
return 1
"""
)

# ARGV: id, token. 1 if the lease held the item, which is queued again in its place.
RELEASE_LUA = (
    PRELUDE
    + """
reclaim(now_us())
if not holds(ARGV[1], ARGV[2]) then return 0 end
requeue(ARGV[1])
return 1
"""
)

# ARGV: id. 1 if the item was queued (not in flight) and is now removed.
CANCEL_LUA = (
    PRELUDE
    + """
reclaim(now_us())
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[6], ARGV[1])
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('DEL', KEYS[3]) end
return 1
"""
)

# ARGV: id. The item's rank among queued items, or false.
POSITION_LUA = (
    PRELUDE
    + """
reclaim(now_us())
return redis.call('ZRANK', KEYS[1], ARGV[1])
"""
)

SIZE_LUA = (
    PRELUDE
    + """
reclaim(now_us())
return redis.call('ZCARD', KEYS[1])
"""
)

# ARGV: stride, number of levels. Returns the count per level, the count in flight, then the oldest wait in
# seconds (a string, since Lua numbers come back truncated to integers). Within a level the head is the
# oldest item.
STATS_LUA = (
    PRELUDE
    + """
local now = now_us()
reclaim(now)
local stride = tonumber(ARGV[1])
local out = {}
local oldest = now
for level = 0, tonumber(ARGV[2]) - 1 do
  local lo = string.format('%.0f', level * stride)
  local hi = '(' .. string.format('%.0f', (level + 1) * stride)
  out[#out + 1] = redis.call('ZCOUNT', KEYS[1], lo, hi)
  local head = redis.call('ZRANGEBYSCORE', KEYS[1], lo, hi, 'LIMIT', 0, 1)
  if head[1] then
    local value = redis.call('HGET', KEYS[2], head[1])
    local enqueued = value and tonumber(string.match(value, '^(%d+):'))
    if enqueued and enqueued < oldest then oldest = enqueued end
  end
end
out[#out + 1] = redis.call('ZCARD', KEYS[4])
out[#out + 1] = string.format('%.6f', math.max(0, now - oldest) / 1000000)
return out
"""
)
