"""
The Lua scripts of the Redis storage driver.

Redis runs a script without interleaving any other command, so every
operation that reads and then writes (posting a batch, claiming, popping,
deleting with a claim check, renewing and releasing claims, purging) is one
script and is atomic with respect to every other client.  Scripts check their
arguments before their first write: Redis does not roll a script back when it
fails half-way, so the only failure left after the checks is the server
itself dying, which the append-only file replays up to the last complete
command.

Key layout (built in Python by L{marconi.storage.redis.store}; C{P} is the
queue's prefix, C{PP} the project's)::

    P:n          string   the queue's marker counter (INCR)
    P:m          zset     every message id, scored by marker
    P:f          zset     ids that may be claimable (not held by a claim
                          known to be live), scored by marker
    P:cl         zset     ids held by a claim, scored by that claim's expiry
    P:x          zset     ids scored by message expiry
    P:d          zset     ids posted with a delay, scored by visibility time
    P:cs         set      the queue's claim ids
    P:h:<id>     hash     one message (fields below)
    P:c:<cid>    hash     one claim: t ttl, g grace, u updated, e expires
    P:cm:<cid>   set      the ids a claim took (checked against the message)
    PP:q         zset     the project's queue names (score 0, lex order)
    PP:meta      hash     queue name -> metadata JSON
    marconi:x    zset     P .. id for every message, scored by expiry
    marconi:cx   zset     P .. cid for every claim, scored by expiry

Message hash fields: k marker, b body, t ttl, c created, e expires,
v visible-at, i client id, ci claim id, ce claim expiry, n claim count,
g tags (JSON list), s checksum.  Ids and claim ids are 32 hex characters,
which is how C{purgeExpired} splits the members of the global sets.

Times are floats written with C{%.17g} so that they survive the round trip
exactly.  Whether a message is live, visible or claimed is always decided
from its fields and the caller's C{now}; the C{f}, C{cl}, C{x} and C{d}
indexes only narrow down what has to be looked at.
"""

# What the listing script needs: the message fields, `frow`, `hasTags` and
# `timeOf`.
# The other scripts have the whole prelude; a script defines its local
# functions anew on every run, so the listing, the most frequent script,
# defines only these.
_ROWS = r"""
local FIELDS = {'k', 'b', 't', 'c', 'e', 'v', 'i', 'ci', 'ce', 'n', 'g', 's'}

-- Append one message to `out` as 10 values: its id, marker, body, TTL,
-- client id, claim id ('' for none), tags (JSON), checksum and claim
-- count, then its times as one text: created, expires, visible-at and
-- claim expiry ('' for none), separated by spaces (numbers as the scripts
-- and the driver write them, which hold no space).  The marker, TTL and
-- count are sent as integers (stored as integer text), the rest as bulk
-- strings, which the client's reply parser (hiredis, in C) builds with no
-- escapes to undo.  The times as one text are fewer values for the server
-- to send and for the client to parse, and are not parsed here.
local function frow(out, id, r)
  local n = #out
  out[n + 1], out[n + 2], out[n + 3], out[n + 4] = id, tonumber(r[1]), r[2],
    tonumber(r[3])
  out[n + 5], out[n + 6], out[n + 7], out[n + 8] = r[7] or '', r[8] or '',
    r[11] or '[]', r[12] or ''
  out[n + 9], out[n + 10] = tonumber(r[10]),
    r[4] .. ' ' .. r[5] .. ' ' .. r[6] .. ' ' .. (r[9] or '')
end

-- The number a time text stands for, each text parsed once per run: the
-- messages of one post share their times' texts (creation, expiry), and
-- those of one claim their claim expiry's (tonumber of a 17-digit time is
-- strtod, one of the largest costs of the scripts on the server).
local parsed = {}
local function timeOf(text)
  local t = parsed[text]
  if not t then
    t = tonumber(text)
    parsed[text] = t
  end
  return t
end

local function hasTags(r, want)
  if #want == 0 then
    return true
  end
  local have = {}
  for _, t in ipairs(cjson.decode(r[11])) do
    have[t] = true
  end
  for _, t in ipairs(want) do
    if not have[t] then
      return false
    end
  end
  return true
end
"""

_PRELUDE = (
    _ROWS
    + r"""
local function num(x)
  return string.format('%.17g', x)
end

local function load(P, id)
  local r = redis.call('HMGET', P .. ':h:' .. id, unpack(FIELDS))
  if not r[1] then
    return nil
  end
  return r
end

local function record(id, r)
  return {id, r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10],
          r[11], r[12]}
end

local function claimLive(r, now)
  return r[8] ~= false and r[9] ~= false and tonumber(r[9]) > now
end

-- marconi.core.rules.isClaimable and hasTags
local function claimable(r, now, tags)
  return tonumber(r[5]) > now and tonumber(r[6]) <= now
    and not claimLive(r, now) and hasTags(r, tags)
end

local function setExpiry(P, id, e)
  local text = num(e)
  redis.call('HSET', P .. ':h:' .. id, 'e', text)
  redis.call('ZADD', P .. ':x', text, id)
  redis.call('ZADD', 'marconi:x', text, P .. id)
end

-- Whether a message created at the time text c, visible from v, may be in
-- the delay index.  A message posted without a delay has both times
-- written from the same number, so the same text: the texts are compared
-- instead of parsed (tonumber of a 17-digit time is strtod, one of the
-- largest costs of the scripts on the server).  A message whose texts
-- differ but not its times is looked for in the index in vain.
local function delayedText(c, v)
  return not c or v ~= c
end

-- Remove message id of queue P (its loaded record r) and its index
-- entries, skipping the indexes it cannot be in: only a message with a claim
-- id is in P:cl, only one posted with a delay (visible after its creation;
-- see delayedText) in P:d, and with `held` (its claim is live) it is
-- normally not in P:f, which every claim leaves.  A node whose clock is
-- ahead may have put it back (its promote took the claim for ended): the
-- id then stays in P:f, and the next scan of P:f (a claim, a pop) drops it
-- because its message is gone.
local function removeMsg(P, id, r, held)
  redis.call('DEL', P .. ':h:' .. id)
  redis.call('ZREM', P .. ':m', id)
  if not held then
    redis.call('ZREM', P .. ':f', id)
  end
  if r[8] then
    redis.call('ZREM', P .. ':cl', id)
    redis.call('SREM', P .. ':cm:' .. r[8], id)
  end
  redis.call('ZREM', P .. ':x', id)
  if delayedText(r[4], r[6]) then
    redis.call('ZREM', P .. ':d', id)
  end
  redis.call('ZREM', 'marconi:x', P .. id)
end

-- redis.call(command, key, values...) in as few calls as Lua can unpack
-- (an even number of values each, so that ZADD pairs stay together).
local function callMany(command, key, values)
  for i = 1, #values, 1000 do
    redis.call(command, key, unpack(values, i, math.min(i + 999, #values)))
  end
end

-- Remove `taken` (ids, none twice) from the set P:cm:cid.  When they are
-- all it holds, as when a claim's messages are deleted together, the set
-- goes with one DEL: in the append-only file that is the key alone, where
-- SREM has every id (a tenth of a claim and bulk delete's bytes).
-- SMISMEMBER (Redis 6.2 and later) tells; without it, SREM.
local function leaveClaim(P, cid, taken)
  local key = P .. ':cm:' .. cid
  if #taken <= 1000 and redis.call('SCARD', key) == #taken then
    local found = redis.pcall('SMISMEMBER', key, unpack(taken))
    if type(found) == 'table' and not found.err then
      local all = true
      for _, f in ipairs(found) do
        all = all and f == 1
      end
      if all then
        redis.call('DEL', key)
        return
      end
    end
  end
  callMany('SREM', key, taken)
end

-- removeMsg for many messages of queue P at once (ids, no id twice, and
-- the claim id each message holds or false): one command per key instead
-- of one per message and key, and none for the claim index when none of
-- the messages has a claim id, for the delay index when none may be
-- delayed (`delayed`; see delayedText) or for the free index when every
-- one is held by a live claim (not `free`; see removeMsg).
local function removeMsgs(P, ids, cids, delayed, free)
  local hashes, globals, byClaim = {}, {}, {}
  local claimed = false
  for i, id in ipairs(ids) do
    hashes[i], globals[i] = P .. ':h:' .. id, P .. id
    local cid = cids[i]
    if cid then
      claimed = true
      byClaim[cid] = byClaim[cid] or {}
      table.insert(byClaim[cid], id)
    end
  end
  for i = 1, #hashes, 1000 do
    redis.call('DEL', unpack(hashes, i, math.min(i + 999, #hashes)))
  end
  callMany('ZREM', P .. ':m', ids)
  if free then
    callMany('ZREM', P .. ':f', ids)
  end
  if claimed then
    callMany('ZREM', P .. ':cl', ids)
  end
  callMany('ZREM', P .. ':x', ids)
  if delayed then
    callMany('ZREM', P .. ':d', ids)
  end
  callMany('ZREM', 'marconi:x', globals)
  for cid, taken in pairs(byClaim) do
    leaveClaim(P, cid, taken)
  end
end

local function ensureQueue(PP, name)
  if redis.call('ZADD', PP .. ':q', 'NX', 0, name) == 1 then
    redis.call('HSET', PP .. ':meta', name, '{}')
  end
end

-- Give the messages whose claim ended by now back to the free index.
local function promote(P, now)
  local ids = redis.call('ZRANGEBYSCORE', P .. ':cl', '-inf', num(now))
  for _, id in ipairs(ids) do
    local k = redis.call('HGET', P .. ':h:' .. id, 'k')
    redis.call('ZREM', P .. ':cl', id)
    if k then
      redis.call('ZADD', P .. ':f', k, id)
    end
  end
end

-- Call fn(id) on the members of a zset in score order (from the highest
-- score down when `reverse`), starting after the score bound `from`
-- ('-inf', '+inf' or '(' .. score), until fn returns true.  fn may remove
-- the member it is given, never a later one of the same page.  The first
-- page holds `size` members (16 when not given: most walks stop within the
-- first few, a page of messages, one claim); pages grow to 100 for walks
-- that go on.  A page shorter than asked for is the last.  Pages come
-- without their scores (Redis writes each score as text with %.17g, a
-- sizeable part of a short walk): the score of the last member of a full
-- page, where the next page starts, is read when the walk gets there,
-- before fn may remove that member (a walk that stops earlier, as a claim
-- of 10 does in a page of 16, never reads it).
local function walk(key, from, reverse, fn, size)
  local command, to = 'ZRANGEBYSCORE', '+inf'
  if reverse then
    command, to = 'ZREVRANGEBYSCORE', '-inf'
  end
  size = size or 16
  while true do
    local page = redis.call(command, key, from, to, 'LIMIT', 0, size)
    local n = #page
    for i = 1, n do
      if i == size then
        from = '(' .. redis.call('ZSCORE', key, page[i])
      end
      if fn(page[i]) then
        return
      end
    end
    if n < size then
      return
    end
    size = math.min(100, size * 4)
  end
end

local function scan(key, after, fn, size)
  walk(key, after, false, fn, size)
end

local function rscan(key, fn)
  walk(key, '+inf', true, fn)
end
"""
)


def _script(body: str) -> str:
    return _PRELUDE + body


# ARGV: PP, name, metadata JSON.  Returns 1 if created.
CREATE_QUEUE = _script(r"""
if redis.call('ZADD', ARGV[1] .. ':q', 'NX', 0, ARGV[2]) == 1 then
  redis.call('HSET', ARGV[1] .. ':meta', ARGV[2], ARGV[3])
  return 1
end
return 0
""")

# ARGV: PP, name, metadata JSON.  Returns 0 if there is no such queue.
SET_QUEUE_METADATA = _script(r"""
if not redis.call('ZSCORE', ARGV[1] .. ':q', ARGV[2]) then
  return 0
end
redis.call('HSET', ARGV[1] .. ':meta', ARGV[2], ARGV[3])
return 1
""")

# Removes every message and claim of queue P (its marker counter stays),
# counting the messages in `removed`.
_DROP_MESSAGES = r"""
local removed = 0
for _, id in ipairs(redis.call('ZRANGE', P .. ':m', 0, -1)) do
  redis.call('DEL', P .. ':h:' .. id)
  redis.call('ZREM', 'marconi:x', P .. id)
  removed = removed + 1
end
for _, cid in ipairs(redis.call('SMEMBERS', P .. ':cs')) do
  redis.call('DEL', P .. ':c:' .. cid, P .. ':cm:' .. cid)
  redis.call('ZREM', 'marconi:cx', P .. cid)
end
redis.call('DEL', P .. ':m', P .. ':f', P .. ':cl', P .. ':x', P .. ':d',
           P .. ':cs')
"""

# ARGV: P, PP, name.
DELETE_QUEUE = _script(
    r"""
local P, PP, name = ARGV[1], ARGV[2], ARGV[3]
"""
    + _DROP_MESSAGES
    + r"""
redis.call('ZREM', PP .. ':q', name)
redis.call('HDEL', PP .. ':meta', name)
return 1
"""
)

# ARGV: P.  Returns the number of messages removed; the queue and its
# metadata stay.
PURGE_MESSAGES = _script(
    r"""
local P = ARGV[1]
"""
    + _DROP_MESSAGES
    + r"""
return removed
"""
)

# ARGV: PP, lower bound ('-' or '(' .. marker), limit, detailed ('1'/'0').
# Returns a flat list: name, metadata-or-nil, name, ...
LIST_QUEUES = _script(r"""
local PP = ARGV[1]
local names = redis.call('ZRANGEBYLEX', PP .. ':q', ARGV[2], '+',
                         'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, name in ipairs(names) do
  out[#out + 1] = name
  if ARGV[4] == '1' then
    out[#out + 1] = redis.call('HGET', PP .. ':meta', name) or '{}'
  else
    out[#out + 1] = ''
  end
end
return out
""")

# ARGV: P, PP, name, now, client id, then six per message:
# id, body, ttl, delay, tags JSON, checksum.
POST_MESSAGES = _script(r"""
local P, PP, name, client = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local now = tonumber(ARGV[4])
if not now or (#ARGV - 5) % 6 ~= 0 then
  return redis.error_reply('marconi: bad arguments to post')
end
for i = 6, #ARGV, 6 do
  if not tonumber(ARGV[i + 2]) or not tonumber(ARGV[i + 3]) then
    return redis.error_reply('marconi: bad ttl or delay')
  end
end
ensureQueue(PP, name)
-- The batch's markers are reserved with one INCRBY (the script runs alone,
-- so they are what one INCR per message would give); each time and marker
-- is written as text once, and each index gets one ZADD for the batch.
local count = (#ARGV - 5) / 6
local last = redis.call('INCRBY', P .. ':n', count)
local nowText = num(now)
local expiries = {}
local markers, byMarker, byExpiry, globals = {}, {}, {}, {}
for i = 6, #ARGV, 6 do
  local id, ttlText, delay = ARGV[i], ARGV[i + 2], tonumber(ARGV[i + 3])
  local n = #markers + 1
  local marker = last - count + n
  local k = string.format('%d', marker)
  local e = expiries[ttlText]
  if not e then
    e = num(now + tonumber(ttlText))
    expiries[ttlText] = e
  end
  local v = nowText
  if delay ~= 0 then
    v = num(now + delay)
  end
  if delay > 0 then
    redis.call('ZADD', P .. ':d', v, id)
  end
  redis.call('HSET', P .. ':h:' .. id, 'k', k, 'b', ARGV[i + 1],
             't', ttlText, 'c', nowText, 'e', e, 'v', v,
             'i', client, 'n', '0', 'g', ARGV[i + 4], 's', ARGV[i + 5])
  byMarker[2 * n - 1], byMarker[2 * n] = k, id
  byExpiry[2 * n - 1], byExpiry[2 * n] = e, id
  globals[2 * n - 1], globals[2 * n] = e, P .. id
  markers[n] = marker
end
callMany('ZADD', P .. ':m', byMarker)
callMany('ZADD', P .. ':f', byMarker)
callMany('ZADD', P .. ':x', byExpiry)
callMany('ZADD', 'marconi:x', globals)
return markers
""")

# ARGV: P, now, after bound, limit, client id, echo, include claimed,
# include delayed ('1'/'0'), tags JSON.  Returns the messages as `frow`
# writes them, one after another.
LIST_MESSAGES = (
    _ROWS
    + r"""
local P, after, client = ARGV[1], ARGV[3], ARGV[5]
local now, limit = tonumber(ARGV[2]), tonumber(ARGV[4])
local echo, withClaimed, withDelayed = ARGV[6] == '1', ARGV[7] == '1',
  ARGV[8] == '1'
local tags = {}
if ARGV[9] ~= '[]' then
  tags = cjson.decode(ARGV[9])
end
local filtered = #tags > 0
local out, found = {}, 0
if limit < 1 then
  return out
end
-- walk, load and claimLive, written out: this runs for every message of
-- every listing, and nothing is removed from the index while it runs, so
-- the score where a next page starts is read only when one is needed.
local hashes, key = P .. ':h:', P .. ':m'
local size = math.min(limit, 100)
while true do
  local page = redis.call('ZRANGEBYSCORE', key, after, '+inf', 'LIMIT', 0, size)
  local n = #page
  for i = 1, n do
    local id = page[i]
    local r = redis.call('HMGET', hashes .. id, unpack(FIELDS))
    if r[1] and timeOf(r[5]) > now
        and (withDelayed or timeOf(r[6]) <= now)
        and (withClaimed or not r[8] or not r[9] or timeOf(r[9]) <= now)
        and (echo or r[7] ~= client)
        and (not filtered or hasTags(r, tags)) then
      frow(out, id, r)
      found = found + 1
      if found >= limit then
        return out
      end
    end
  end
  if n < size then
    return out
  end
  after = '(' .. redis.call('ZSCORE', key, page[n])
  size = math.min(100, size * 4)
end
"""
)

# ARGV: P, now, ids...  Returns the messages as `frow` writes them.
GET_MESSAGES = _script(r"""
local P, now = ARGV[1], tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV do
  local r = load(P, ARGV[i])
  if r and tonumber(r[5]) > now then
    frow(out, ARGV[i], r)
  end
end
return out
""")

# ARGV: P, now.  Returns {total, claimed, delayed, oldest, newest}.
QUEUE_STATS = _script(r"""
local P, now = ARGV[1], tonumber(ARGV[2])
local after = '(' .. num(now)
local total = redis.call('ZCOUNT', P .. ':x', after, '+inf')
local claimed = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':cl', after, '+inf')) do
  local r = load(P, id)
  if r and tonumber(r[5]) > now and claimLive(r, now) then
    claimed = claimed + 1
  end
end
local delayed = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':d', after, '+inf')) do
  local r = load(P, id)
  if r and tonumber(r[5]) > now and tonumber(r[6]) > now then
    delayed = delayed + 1
  end
end
local oldest, newest = false, false
local function live(id)
  local r = load(P, id)
  if r and tonumber(r[5]) > now then
    return record(id, r)
  end
  return false
end
scan(P .. ':m', '-inf', function(id)
  oldest = live(id)
  return oldest ~= false
end)
rscan(P .. ':m', function(id)
  newest = live(id)
  return newest ~= false
end)
return {total, claimed, delayed, oldest, newest}
""")

# ARGV: P, id, claim id ('' for none), now.
# Returns 1 deleted, 0 no such live message, -1 held by a live claim that
# is not the caller's, -2 a claim id was given but no live claim holds the
# message.
DELETE_MESSAGE = _script(r"""
local P, id, cid, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
-- Only the fields the checks and removeMsg read, at their places in a
-- loaded record: created, expiry, visible-at, claim id, claim expiry.
local f = redis.call('HMGET', P .. ':h:' .. id, 'c', 'e', 'v', 'ci', 'ce')
if not f[2] or tonumber(f[2]) <= now then
  return 0
end
local r = {[4] = f[1], [5] = f[2], [6] = f[3], [8] = f[4], [9] = f[5]}
-- marconi.core.rules.checkDelete
local held = claimLive(r, now)
if held then
  if r[8] ~= cid then
    return -1
  end
elseif cid ~= '' then
  return -2
end
removeMsg(P, id, r, held)
return 1
""")

# ARGV: P, now, number of claim ids (-1: ignore claims), claim ids..., ids...
# Returns the number deleted.
DELETE_MESSAGES = _script(r"""
local P, now, nclaims = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local claims = {}
local first = 4
if nclaims >= 0 then
  for i = 4, 3 + nclaims do
    claims[ARGV[i]] = true
  end
  first = 4 + nclaims
end
-- Only the fields the checks and removeMsgs read: expiry, claim id, claim
-- expiry, created and visible-at.
local ids, cids, seen, delayed, free = {}, {}, {}, false, false
for i = first, #ARGV do
  local id = ARGV[i]
  if not seen[id] then
    seen[id] = true
    local r = redis.call('HMGET', P .. ':h:' .. id, 'e', 'ci', 'ce', 'c', 'v')
    if r[1] and timeOf(r[1]) > now then
      -- marconi.core.rules.deletableWith: a message of one of the claims
      -- given is deletable whether or not its claim is live.
      local held = r[2] and r[3] and timeOf(r[3]) > now
      if nclaims < 0 or claims[r[2]] or not held then
        local n = #ids + 1
        ids[n], cids[n] = id, r[2]
        delayed = delayed or delayedText(r[4], r[5])
        free = free or not held
      end
    end
  end
end
removeMsgs(P, ids, cids, delayed, free)
return #ids
""")

# ARGV: P, now, limit, tags JSON.  Returns the popped messages as `frow`
# writes them.
POP_MESSAGES = _script(r"""
local P, now, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local tags = cjson.decode(ARGV[4])
local out, popped = {}, 0
if limit < 1 then
  return out
end
promote(P, now)
scan(P .. ':f', '-inf', function(id)
  local r = load(P, id)
  if not r then
    redis.call('ZREM', P .. ':f', id)
  elseif claimable(r, now, tags) then
    frow(out, id, r)
    popped = popped + 1
    removeMsg(P, id, r)
  end
  return popped >= limit
end)
return out
""")

# ARGV: P, PP, now, claim id, ttl, grace, limit, tags JSON,
# max claim count ('' for none), dead-letter P ('' for none),
# dead-letter queue name, dead-letter TTL ('' for the message's own).
# Returns {number moved to the dead-letter queue, the claimed messages as
# `frow` writes them, one after another (none: an empty table)}.  A message already claimed the maximum
# number of times moves to the end of the dead-letter queue, unclaimed,
# visible now, with the dead-letter TTL, keeping its id, creation time and
# claim count; the scan goes on so that the claim can still be filled.
CREATE_CLAIM = _script(r"""
local P, PP, cid = ARGV[1], ARGV[2], ARGV[4]
local now, ttl, grace = tonumber(ARGV[3]), tonumber(ARGV[5]), tonumber(ARGV[6])
local limit = tonumber(ARGV[7])
local tags = cjson.decode(ARGV[8])
local maxCount = tonumber(ARGV[9])
local DP, dname, dttl = ARGV[10], ARGV[11], tonumber(ARGV[12])
if DP == '' or DP == P then
  maxCount = nil
end
if limit < 1 then
  return {0, {}}
end
local moved = 0

local function deadLetter(id, r)
  moved = moved + 1
  ensureQueue(PP, dname)
  removeMsg(P, id, r)
  local mttl = dttl or tonumber(r[3])
  local e = now + mttl
  local k = redis.call('INCR', DP .. ':n')
  redis.call('HSET', DP .. ':h:' .. id, 'k', k, 'b', r[2], 't', num(mttl),
             'c', r[4], 'e', num(e), 'v', num(now), 'i', r[7], 'n', r[10],
             'g', r[11], 's', r[12])
  redis.call('ZADD', DP .. ':m', k, id)
  redis.call('ZADD', DP .. ':f', k, id)
  redis.call('ZADD', DP .. ':x', num(e), id)
  redis.call('ZADD', 'marconi:x', num(e), DP .. id)
end

promote(P, now)
local cexp = now + ttl
local floor = cexp + grace
-- Each time is written as text once, however many messages it goes to.
local cexpText, floorText = num(cexp), nil
local taken, held, extended = {}, {}, {}
scan(P .. ':f', '-inf', function(id)
  local r = load(P, id)
  if not r then
    redis.call('ZREM', P .. ':f', id)
    return false
  end
  -- claimable, written out so that the expiry is parsed once.
  local e = timeOf(r[5])
  if e <= now or timeOf(r[6]) > now or claimLive(r, now)
      or not hasTags(r, tags) then
    return false
  end
  -- marconi.core.rules.goesToDeadLetter
  if maxCount and tonumber(r[10]) >= maxCount then
    deadLetter(id, r)
    return false
  end
  if r[8] then
    redis.call('SREM', P .. ':cm:' .. r[8], id)
  end
  -- r becomes the message as written, so it is not read back.  A message
  -- that would expire before the claim's grace ends lives until then (its
  -- expiry indexes are changed below, with one command per key).
  r[8], r[9], r[10] = cid, cexpText, tostring(tonumber(r[10]) + 1)
  if e < floor then
    floorText = floorText or num(floor)
    r[5] = floorText
    redis.call('HSET', P .. ':h:' .. id, 'ci', r[8], 'ce', r[9], 'n', r[10],
               'e', r[5])
    extended[#extended + 1] = id
  else
    redis.call('HSET', P .. ':h:' .. id, 'ci', r[8], 'ce', r[9], 'n', r[10])
  end
  frow(taken, id, r)
  held[#held + 1] = id
  return #held >= limit
end)
if #held == 0 then
  return {moved, {}}
end
-- The index changes of the claimed messages, one command per key.
local scored = {}
for _, id in ipairs(held) do
  scored[#scored + 1], scored[#scored + 2] = cexpText, id
end
callMany('ZREM', P .. ':f', held)
callMany('ZADD', P .. ':cl', scored)
if #extended > 0 then
  local byExpiry, globals = {}, {}
  for i, id in ipairs(extended) do
    byExpiry[2 * i - 1], byExpiry[2 * i] = floorText, id
    globals[2 * i - 1], globals[2 * i] = floorText, P .. id
  end
  callMany('ZADD', P .. ':x', byExpiry)
  callMany('ZADD', 'marconi:x', globals)
end
callMany('SADD', P .. ':cm:' .. cid, held)
redis.call('HSET', P .. ':c:' .. cid, 't', ARGV[5], 'g', ARGV[6],
           'u', num(now), 'e', cexpText)
redis.call('SADD', P .. ':cs', cid)
redis.call('ZADD', 'marconi:cx', cexpText, P .. cid)
return {moved, taken}
""")

# ARGV: P, claim id, now.
# Returns {} or {ttl, grace, updated, expires, messages}.
GET_CLAIM = _script(r"""
local P, cid, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local c = redis.call('HMGET', P .. ':c:' .. cid, 't', 'g', 'u', 'e')
if not c[4] or tonumber(c[4]) <= now then
  return {}
end
local msgs = {}
for _, id in ipairs(redis.call('SMEMBERS', P .. ':cm:' .. cid)) do
  local r = load(P, id)
  if r and r[8] == cid and tonumber(r[5]) > now then
    msgs[#msgs + 1] = record(id, r)
  end
end
return {c[1], c[2], c[3], c[4], msgs}
""")

# ARGV: P, claim id, now, ttl, grace.  Returns 1, or 0 if no live claim.
RENEW_CLAIM = _script(r"""
local P, cid = ARGV[1], ARGV[2]
local now, ttl, grace = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local key = P .. ':c:' .. cid
local e = redis.call('HGET', key, 'e')
if not e or tonumber(e) <= now then
  return 0
end
local cexp = now + ttl
local floor = cexp + grace
redis.call('HSET', key, 't', ARGV[4], 'g', ARGV[5], 'u', num(now),
           'e', num(cexp))
redis.call('ZADD', 'marconi:cx', num(cexp), P .. cid)
for _, id in ipairs(redis.call('SMEMBERS', P .. ':cm:' .. cid)) do
  local r = load(P, id)
  if r and r[8] == cid and tonumber(r[5]) > now then
    redis.call('HSET', P .. ':h:' .. id, 'ce', num(cexp))
    redis.call('ZADD', P .. ':cl', num(cexp), id)
    redis.call('ZREM', P .. ':f', id)
    if tonumber(r[5]) < floor then
      setExpiry(P, id, floor)
    end
  end
end
return 1
""")

# ARGV: P, claim id.
RELEASE_CLAIM = _script(r"""
local P, cid = ARGV[1], ARGV[2]
for _, id in ipairs(redis.call('SMEMBERS', P .. ':cm:' .. cid)) do
  local r = load(P, id)
  if r and r[8] == cid then
    redis.call('HDEL', P .. ':h:' .. id, 'ci', 'ce')
    redis.call('ZREM', P .. ':cl', id)
    redis.call('ZADD', P .. ':f', r[1], id)
  end
end
redis.call('DEL', P .. ':c:' .. cid, P .. ':cm:' .. cid)
redis.call('SREM', P .. ':cs', cid)
redis.call('ZREM', 'marconi:cx', P .. cid)
return 1
""")

# ARGV: now, batch size.
# Returns {messages removed, index entries looked at, claims looked at}.
PURGE_EXPIRED = _script(r"""
local now, batch, river = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local removed = 0
-- Messages removed, by queue prefix: the script removes each message once,
-- so the caller reports each expiry once however many nodes purge.
local byQueue = {}
-- What a message counts: one, or for a record of an audit river (its
-- prefix ends with `river`) the events it holds, the length of its JSON
-- array (marconi.core.audit.recordEvents).
local function weight(P, r)
  if string.sub(P, -#river) ~= river then
    return 1
  end
  local ok, events = pcall(cjson.decode, r[2])
  if ok and type(events) == 'table' and #events > 0 then
    return #events
  end
  return 1
end
local members = redis.call('ZRANGEBYSCORE', 'marconi:x', '-inf', num(now),
                           'LIMIT', 0, batch)
for _, m in ipairs(members) do
  local P, id = string.sub(m, 1, -33), string.sub(m, -32)
  local r = load(P, id)
  if r and tonumber(r[5]) <= now then
    removeMsg(P, id, r)
    local w = weight(P, r)
    removed = removed + w
    byQueue[P] = (byQueue[P] or 0) + w
  elseif r then
    redis.call('ZADD', 'marconi:x', r[5], m)
  else
    redis.call('ZREM', 'marconi:x', m)
  end
end
local claims = redis.call('ZRANGEBYSCORE', 'marconi:cx', '-inf', num(now),
                          'LIMIT', 0, batch)
for _, m in ipairs(claims) do
  local P, cid = string.sub(m, 1, -33), string.sub(m, -32)
  local e = redis.call('HGET', P .. ':c:' .. cid, 'e')
  if e and tonumber(e) > now then
    redis.call('ZADD', 'marconi:cx', e, m)
  else
    redis.call('DEL', P .. ':c:' .. cid, P .. ':cm:' .. cid)
    redis.call('SREM', P .. ':cs', cid)
    redis.call('ZREM', 'marconi:cx', m)
  end
end
return {removed, #members, #claims, cjson.encode(byQueue)}
""")

# ARGV: P, PP, name, after bound ('-inf' or '(' .. marker), most messages,
# first page ('1'/'0').  Returns false when the queue does not exist, else
# JSON: [metadata or null, marker counter, claims, messages], a claim as
# [cid, ttl, grace, updated, expires], a message as `record` makes it.
EXPORT_QUEUE = _script(r"""
local P, PP, name = ARGV[1], ARGV[2], ARGV[3]
local meta = redis.call('HGET', PP .. ':meta', name)
if not meta and not redis.call('ZSCORE', PP .. ':q', name)
    and redis.call('ZCARD', P .. ':m') == 0 then
  return false
end
local messages = {}
local ids = redis.call('ZRANGEBYSCORE', P .. ':m', ARGV[4], '+inf',
                       'LIMIT', 0, tonumber(ARGV[5]))
for _, id in ipairs(ids) do
  local r = load(P, id)
  if r then
    messages[#messages + 1] = record(id, r)
  end
end
local claims = {}
if ARGV[6] == '1' then
  for _, cid in ipairs(redis.call('SMEMBERS', P .. ':cs')) do
    local c = redis.call('HMGET', P .. ':c:' .. cid, 't', 'g', 'u', 'e')
    if c[1] then
      claims[#claims + 1] = {cid, c[1], c[2], c[3], c[4]}
    end
  end
end
return cjson.encode({meta or cjson.null, redis.call('GET', P .. ':n') or '0',
                     claims, messages})
""")

# ARGV: P, PP, name, first page ('1'/'0'), metadata JSON ('' for none),
# marker counter, claims JSON, messages JSON (as EXPORT_QUEUE gives them,
# every field a string, '' for no claim).  A first page replaces what
# the queue held.
IMPORT_QUEUE = _script(
    r"""
local P, PP, name = ARGV[1], ARGV[2], ARGV[3]
if ARGV[4] == '1' then
"""
    + _DROP_MESSAGES
    + r"""
  redis.call('ZREM', PP .. ':q', name)
  redis.call('HDEL', PP .. ':meta', name)
  if ARGV[5] ~= '' then
    redis.call('ZADD', PP .. ':q', 0, name)
    redis.call('HSET', PP .. ':meta', name, ARGV[5])
  else
    ensureQueue(PP, name)
  end
  if tonumber(ARGV[6]) > tonumber(redis.call('GET', P .. ':n') or '0') then
    redis.call('SET', P .. ':n', ARGV[6])
  end
  for _, c in ipairs(cjson.decode(ARGV[7])) do
    redis.call('HSET', P .. ':c:' .. c[1], 't', c[2], 'g', c[3], 'u', c[4],
               'e', c[5])
    redis.call('SADD', P .. ':cs', c[1])
    redis.call('ZADD', 'marconi:cx', c[5], P .. c[1])
  end
end
for _, m in ipairs(cjson.decode(ARGV[8])) do
  local id = m[1]
  local old = load(P, id)
  if old then
    removeMsg(P, id, old)
  end
  for _, other in ipairs(redis.call('ZRANGEBYSCORE', P .. ':m', m[2], m[2])) do
    local r = load(P, other)
    if r then
      removeMsg(P, other, r)
    end
  end
  redis.call('HSET', P .. ':h:' .. id, 'k', m[2], 'b', m[3], 't', m[4],
             'c', m[5], 'e', m[6], 'v', m[7], 'i', m[8], 'n', m[11],
             'g', m[12], 's', m[13])
  if m[9] ~= '' then
    redis.call('HSET', P .. ':h:' .. id, 'ci', m[9], 'ce', m[10])
    redis.call('SADD', P .. ':cm:' .. m[9], id)
    redis.call('ZADD', P .. ':cl', m[10], id)
  else
    redis.call('ZADD', P .. ':f', m[2], id)
  end
  redis.call('ZADD', P .. ':m', m[2], id)
  redis.call('ZADD', P .. ':x', m[6], id)
  if tonumber(m[7]) > tonumber(m[5]) then
    redis.call('ZADD', P .. ':d', m[7], id)
  end
  redis.call('ZADD', 'marconi:x', m[6], P .. id)
end
return 1
"""
)
