-- Breakwater cluster sync: one call per shard per sync interval.
--
-- KEYS[1]  the shard's hash-tagged base, e.g. {bw:0}; every key touched is
--          "<base>:..." so the whole call stays in one Redis Cluster slot.
-- ARGV     instance id, heartbeat ("1" on shard 0), peer ttl (ms), channel,
--          section count, then per section:
--            kind ("c" counter | "h" hot), policy name, window ms, buckets,
--            item count, threshold (a counter's N), hold line, hot ttl ms,
--            then per item: hash (16 hex), delta, key text, and for
--            counters the lease: give back, its bucket, want, limit.
-- Returns  { peers (id, last-seen ms pairs), now ms, sections... } where a
--          section is { totals, hot pairs (hash, key text), grants, bucket }.
--
-- Counts live in one hash per (policy, bucket): field = key hash, value =
-- count; a bucket expires a window after it closes. A counter's fleet total
-- is the last `buckets` buckets plus the one before, all in full: never
-- less than the true count in the window, whatever the shape of the
-- traffic (limits must not be exceeded). A hot-key total weighs the oldest
-- bucket by the part of it still inside the window (a sliding estimate).
-- Leases: a counter item hands back the unspent part of its last lease (to
-- the bucket it was granted in, if still in the window), adds what it
-- admitted without a lease, and is granted min(want, limit - total) — all
-- inside this one atomic call, so no headroom is granted twice. A young key
-- (counts in its last two buckets only) is granted at most 1/N of what is
-- left per ask: instances that just met it may not have reported yet.
-- Time is Redis's own clock, so instances' clocks never split a bucket.

local base = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id, beat, peer_ttl, channel = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local nsec = tonumber(ARGV[5])

local peers = {}
if beat == '1' then
  local pk = base .. ':peers'
  redis.call('ZADD', pk, now, id)
  redis.call('ZREMRANGEBYSCORE', pk, '-inf', now - peer_ttl)
  redis.call('PEXPIRE', pk, peer_ttl * 2)
  peers = redis.call('ZRANGE', pk, 0, -1, 'WITHSCORES')
end

local CHUNK = 1000
local out = { peers, now }
local i = 6
for _ = 1, nsec do
  local kind, name = ARGV[i], ARGV[i + 1]
  local window, buckets, n = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
  local threshold, hold, ttl = tonumber(ARGV[i + 5]), tonumber(ARGV[i + 6]), tonumber(ARGV[i + 7])
  i = i + 8
  local width = math.max(1, math.floor(window / buckets))
  local cur = math.floor(now / width)
  local frac = (now % width) / width
  local prefix = base .. ':' .. kind .. ':' .. name .. ':'
  local fields, names, wants, limits = {}, {}, {}, {}
  local curkey = prefix .. cur
  local wrote = false
  for k = 1, n do
    local h, d = ARGV[i], tonumber(ARGV[i + 1])
    fields[k], names[k] = h, ARGV[i + 2]
    local give, from = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
    wants[k], limits[k] = tonumber(ARGV[i + 5]), tonumber(ARGV[i + 6])
    if d > 0 then
      redis.call('HINCRBY', curkey, h, d)
      wrote = true
    end
    if give > 0 and from >= cur - buckets then
      local gkey = prefix .. from
      local held = tonumber(redis.call('HGET', gkey, h) or '0')
      redis.call('HINCRBY', gkey, h, -math.min(give, held))
    end
    i = i + 7
  end
  if wrote then
    redis.call('PEXPIRE', curkey, window + 2 * width)
  end
  local totals, oldest = {}, {}
  for k = 1, n do totals[k], oldest[k] = 0, 0 end
  for b = 0, buckets do
    local weight = 1
    if b == buckets and kind == 'h' then weight = 1 - frac end
    local bkey = prefix .. (cur - b)
    local from = 1
    while from <= n do
      local to = math.min(n, from + CHUNK - 1)
      local vals = redis.call('HMGET', bkey, unpack(fields, from, to))
      for k = from, to do
        local v = vals[k - from + 1]
        local x = tonumber(v or '0')
        if x ~= 0 then
          totals[k] = totals[k] + x * weight
          oldest[k] = b
        end
      end
      from = to + 1
    end
  end
  local grants = {}
  if kind == 'c' then
    local granted = false
    for k = 1, n do
      local room = limits[k] - totals[k]
      if oldest[k] <= 1 then room = math.ceil(room / math.max(1, threshold)) end
      local g = math.max(0, math.min(wants[k], room))
      grants[k] = g
      if g > 0 then
        redis.call('HINCRBY', curkey, fields[k], g)
        totals[k] = totals[k] + g
        granted = true
      end
    end
    if granted then
      redis.call('PEXPIRE', curkey, window + 2 * width)
    end
  end
  local ints = {}
  for k = 1, n do ints[k] = math.floor(totals[k] + 0.5) end

  local hot = {}
  if kind == 'h' then
    local hk = base .. ':hot:' .. name
    local nk = base .. ':hotname:' .. name
    for k = 1, n do
      local total = totals[k]
      if total >= hold then
        local h = fields[k]
        if redis.call('ZSCORE', hk, h) then
          redis.call('ZADD', hk, now, h)
        elseif total >= threshold then
          redis.call('ZADD', hk, now, h)
          redis.call('HSET', nk, h, names[k])
          redis.call('PUBLISH', channel, cjson.encode({
            t = 'hot', rule = name, hash = h, key = names[k], count = ints[k], from = id }))
        end
      end
    end
    local cold = redis.call('ZRANGEBYSCORE', hk, '-inf', now - ttl)
    for _, h in ipairs(cold) do
      local key = redis.call('HGET', nk, h) or ''
      redis.call('ZREM', hk, h)
      redis.call('HDEL', nk, h)
      redis.call('PUBLISH', channel, cjson.encode({
        t = 'cooled', rule = name, hash = h, key = key, count = 0, from = id }))
    end
    redis.call('PEXPIRE', hk, ttl + 2 * window)
    redis.call('PEXPIRE', nk, ttl + 2 * window)
    local members = redis.call('ZRANGE', hk, 0, 1023)
    for _, h in ipairs(members) do
      hot[#hot + 1] = h
      hot[#hot + 1] = redis.call('HGET', nk, h) or ''
    end
  end
  out[#out + 1] = { ints, hot, grants, cur }
end
return out
