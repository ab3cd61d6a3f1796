-- Flow control (after base.lua): limits decided on the server, across every worker.
--[[
A function with limits -- a concurrency limit, a rate limit, group limits -- or one that is paused
is *gated*: its tasks do not go straight into their stream but wait at a gate until admitted. A
gate is a function's, or a (function, group key) pair's when the function has group limits; its
name is <length of fn>:<fn>[:<key>]. Admission moves a waiting task into its stream when the
function (and its group) has a free slot and, with a rate limit, room in the window. It happens in
the server calls that change what it depends on: a task arriving at the gate, an admitted task
ending (finish, dead_letter, abort, retire), a window's timer (an entry of the delayed set, fired
by promote), a block lifted, resume. No worker polls; a waiting task occupies no worker. Group keys
with waiting tasks are visited round-robin, so one key's backlog never starves the others.

Concurrency counts admitted tasks until they end. A rate limit is a sliding window of admissions;
workers check a second window of starts (start_gated) just before they run a rate-limited task,
so that at most the limit starts in any window even when admitted tasks wait a moment in their
stream. A task that may not start yet goes back to the gate after the window's wait.

Keys: lim (hash fn -> msgpack {g (1: grouped), c, rn, rp, gc, grn, grp, paused}; '*' -> the
queue's pause),
gq:<gate> (list of waiting ids), gk:<fn> (list of group keys with waiting ids, rotated), gw (set
of functions with waiting ids), gn (the number of waiting ids), gc:<gate> (admitted and not ended),
ga:<gate> and gs:<gate> (zsets: admission and start times in the window), gb:<gate> (blocked until
it expires), adm (hash id -> [fn, key] of an admitted task until it ends), gt (zset: the moment
each function's gates may admit again; promote fires them).
]]

-- the flow configuration of fn (nil when it has none), read once per call
local function limits_of(p, fn)
  local cached = lim_cache[fn]
  if cached == nil then
    local raw = redis.call('HGET', p .. KEY.limits, fn)
    cached = raw and cmsgpack.unpack(raw) or false
    lim_cache[fn] = cached
  end
  return cached or nil
end

local function paused(p, fn)
  local all, own = limits_of(p, '*'), limits_of(p, fn)
  return (all and all.paused == 1) or (own and own.paused == 1) or false
end

local function grouped(cfg) return (cfg.g or 0) == 1 end

local function gate_name(fn, key)
  if key == nil then return #fn .. ':' .. fn end
  return #fn .. ':' .. fn .. ':' .. key
end

is_gated = function(p, fn)
  return limits_of(p, fn) ~= nil or paused(p, fn)
end

-- the earliest moment a window of `limit` entries per `period` ms has room, or nil if it has now
local function window_full(p, window, limit, period, now)
  if not limit or limit <= 0 then return nil end
  redis.call('ZREMRANGEBYSCORE', window, '-inf', now - period)
  if redis.call('ZCARD', window) < limit then return nil end
  local oldest = redis.call('ZRANGE', window, 0, 0, 'WITHSCORES')
  return tonumber(oldest[2]) + period
end

local function count(key) return tonumber(redis.call('GET', key) or '0') end

-- a counter goes down; at zero it is gone (no key is left behind once everything ended)
local function decrement(key)
  if redis.call('DECR', key) <= 0 then redis.call('DEL', key) end
end

-- add an entry to a window, which expires once its newest entry is out of it
local function record(window, now, member, period)
  redis.call('ZADD', window, now, member)
  redis.call('PEXPIRE', window, period)
end

-- a start counts in its window this much longer than the period (ms): a granted task's body
-- begins a little after the grant (the reply, the worker's event loop), and it is the bodies that
-- must respect the limit; 50 ms of such jitter is absorbed (5% of a 1 s window, less for shorter
-- ones). An admission counts a little longer still, so that a task admitted as soon as its window
-- allows finds room among the starts too.
local function start_margin(period) return math.min(50, math.floor(period / 20)) end
local function admit_margin(period) return start_margin(period) + 10 end

-- the server's clock (ms): the windows of starts are shared by workers on many hosts, whose clocks
-- and round trips differ; one clock orders every grant as the server applies it
local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- why the gate (fn's, or a group's) admits nothing now: true (a slot is taken: wait for an
-- end) or the moment to try again; nil when it may admit
local function gate_closed(p, gate, slots, limit, period, now)
  if slots and slots > 0 and count(p .. KEY.gate_count .. gate) >= slots then return true end
  local blocked = redis.call('PTTL', p .. KEY.gate_block .. gate)
  if blocked > 0 then return now + blocked end
  return window_full(p, p .. KEY.admit_window .. gate, limit, period and period + admit_margin(period),
    now)
end

local function set_timer(p, fn, at)
  -- the earliest timer of a function wins (LT: only ever moved earlier)
  redis.call('ZADD', p .. KEY.gate_timers, 'LT', at, fn)
  local first = redis.call('ZRANGE', p .. KEY.gate_timers, 0, 0)
  if first[1] == fn then redis.call('PUBLISH', p .. KEY.wake_channel, at) end
end

-- admit fn's waiting tasks while its gates allow
local function admit(p, fn, now)
  if paused(p, fn) then return end
  local cfg = limits_of(p, fn) or {}
  local ring = p .. KEY.gate_ring .. fn
  local fn_gate = gate_name(fn)
  local groups = grouped(cfg)
  while true do
    if redis.call('LLEN', ring) == 0 then
      -- nothing waits: no timer and no entry to keep
      redis.call('SREM', p .. KEY.gated_functions, fn)
      return
    end
    local closed = gate_closed(p, fn_gate, cfg.c, cfg.rn, cfg.rp, now)
    if closed then
      if closed ~= true then set_timer(p, fn, closed) end
      return
    end
    local picked, gate, soonest = nil, nil, nil
    for _ = 1, redis.call('LLEN', ring) do
      local key = redis.call('LMOVE', ring, ring, 'LEFT', 'RIGHT')
      local candidate = groups and gate_name(fn, key) or fn_gate
      local shut = groups and gate_closed(p, candidate, cfg.gc, cfg.grn, cfg.grp, now) or nil
      if not shut then
        picked, gate = key, candidate
        break
      elseif shut ~= true and (soonest == nil or shut < soonest) then
        soonest = shut
      end
    end
    if picked == nil then
      if soonest then set_timer(p, fn, soonest) end
      return
    end
    local queue = p .. KEY.gate_queue .. gate
    local id = redis.call('LPOP', queue)
    if redis.call('LLEN', queue) == 0 then redis.call('LREM', ring, 0, picked) end
    local st = id and load_state(p, id)
    if st and st[1] == STATE.gated then
      decrement(p .. KEY.gated_total)
      add_to_stream(p, id, st[2], st[3])
      -- one admission per id in a window: a task sent back to wait for its start is not
      -- counted twice
      redis.call('INCR', p .. KEY.gate_count .. fn_gate)
      if (cfg.rn or 0) > 0 then
        record(p .. KEY.admit_window .. fn_gate, now, id, cfg.rp + admit_margin(cfg.rp))
      end
      if groups then
        redis.call('INCR', p .. KEY.gate_count .. gate)
        if (cfg.grn or 0) > 0 then
          record(p .. KEY.admit_window .. gate, now, id, cfg.grp + admit_margin(cfg.grp))
        end
      end
      redis.call('HSET', p .. KEY.admitted, id, cmsgpack.pack({fn, groups and picked or false}))
    end
  end
end

gate_push = function(p, id, prio, fields, now)
  local fn = field(fields, FIELD.fn)
  local cfg = limits_of(p, fn) or {}
  local key = grouped(cfg) and (field(fields, FIELD.group) or '') or ''
  local gate = grouped(cfg) and gate_name(fn, key) or gate_name(fn)
  redis.call('HSET', tasks_key(p), id, cmsgpack.pack({STATE.gated, prio, fields, 0}))
  redis.call('INCR', p .. KEY.gated_total)
  if redis.call('RPUSH', p .. KEY.gate_queue .. gate, id) == 1 then
    redis.call('RPUSH', p .. KEY.gate_ring .. fn, key)
  end
  redis.call('SADD', p .. KEY.gated_functions, fn)
  admit(p, fn, now)
end

-- an admitted task ended (or left its stream unrun): its slots are free for the next ones
local function release_admission(p, id, now)
  local raw = redis.call('HGET', p .. KEY.admitted, id)
  if not raw then return end
  redis.call('HDEL', p .. KEY.admitted, id)
  local fn, key = unpack(cmsgpack.unpack(raw))
  for _, gate in ipairs({gate_name(fn), key and gate_name(fn, key) or nil}) do
    decrement(p .. KEY.gate_count .. gate)
  end
  admit(p, fn, now)
end

-- take a gated task out of its gate (it is aborted or unscheduled)
local function leave_gate(p, id, fields)
  local fn = field(fields, FIELD.fn)
  local cfg = limits_of(p, fn) or {}
  local key = grouped(cfg) and (field(fields, FIELD.group) or '') or ''
  local queue = p .. KEY.gate_queue .. (grouped(cfg) and gate_name(fn, key) or gate_name(fn))
  if redis.call('LREM', queue, 0, id) > 0 then
    decrement(p .. KEY.gated_total)
    if redis.call('LLEN', queue) == 0 then
      redis.call('LREM', p .. KEY.gate_ring .. fn, 0, key)
    end
  end
end

-- the gates' timers due by now (promote): admit what their functions' gates allow now; returns
-- the next timer's moment, or nil
local function fire_timers(p, now)
  local timers = p .. KEY.gate_timers
  local due = redis.call('ZRANGEBYSCORE', timers, '-inf', now)
  if #due > 0 then redis.call('ZREM', timers, unpack(due)) end
  for _, fn in ipairs(due) do admit(p, fn, now) end
  local first = redis.call('ZRANGE', timers, 0, 0, 'WITHSCORES')
  return first[2] and tonumber(first[2]) or nil
end

local function has_limits(cfg)
  for _, name in ipairs({'c', 'rn', 'gc', 'grn'}) do
    if (cfg[name] or 0) > 0 then return true end
  end
  return false
end

-- the configuration of fn (nil: no limits) as a worker registered it: write it, keeping its
-- pause, and admit what it now allows
local function configure(p, fn, cfg, now)
  local old = limits_of(p, fn)
  local was_paused = old and old.paused == 1
  if (cfg == nil or not has_limits(cfg)) and not was_paused then
    redis.call('HDEL', p .. KEY.limits, fn)
    lim_cache[fn] = false
  else
    cfg = cfg or {}
    cfg.paused = was_paused and 1 or 0
    redis.call('HSET', p .. KEY.limits, fn, cmsgpack.pack(cfg))
    lim_cache[fn] = cfg
  end
  admit(p, fn, now)
end

--[[ pause(KEYS[1]=prefix; ARGV: fn or '*' (the whole queue), now, 1 pause | 0 resume)
Paused, a function's new tasks wait at its gate and nothing of it is admitted; workers stop
starting its tasks (they hear the pause channel). Resumed, what waits is admitted as the limits
allow. Returns 1 when the state changed. ]]
local function pause(keys, args)
  local p = keys[1]
  local fn, now, on = args[1], tonumber(args[2]), tonumber(args[3])
  local cfg = limits_of(p, fn)
  local was = cfg and cfg.paused == 1 or false
  if was == (on == 1) then return 0 end
  cfg = cfg or {}
  cfg.paused = on
  if on == 0 and not has_limits(cfg) then
    redis.call('HDEL', p .. KEY.limits, fn)
    lim_cache[fn] = false
  else
    redis.call('HSET', p .. KEY.limits, fn, cmsgpack.pack(cfg))
    lim_cache[fn] = cfg
  end
  if on == 0 then
    local fns = fn == '*' and redis.call('SMEMBERS', p .. KEY.gated_functions) or {fn}
    for _, name in ipairs(fns) do admit(p, name, now) end
  end
  redis.call('PUBLISH', p .. KEY.pause_channel, fn)
  return 1
end

--[[ start_gated(KEYS[1]=prefix; ARGV: id)
A worker is about to run the rate-limited task id: records the start if the windows of starts
allow it. Returns 0 when it may start, else the ms to wait before trying again. ]]
local function start_gated(keys, args)
  local p = keys[1]
  local id = args[1]
  local raw = redis.call('HGET', p .. KEY.admitted, id)
  if not raw then return 0 end
  local fn, key = unpack(cmsgpack.unpack(raw))
  local cfg = limits_of(p, fn) or {}
  local now = server_ms()
  local checks = {{gate_name(fn), cfg.rn, cfg.rp}}
  if key then checks[2] = {gate_name(fn, key), cfg.grn, cfg.grp} end
  local wait = 0
  for _, check in ipairs(checks) do
    local period = check[3] and check[3] + start_margin(check[3])
    local at = window_full(p, p .. KEY.start_window .. check[1], check[2], period, now)
    if at and at - now > wait then wait = at - now end
  end
  if wait > 0 then return wait end
  for _, check in ipairs(checks) do
    if check[2] and check[2] > 0 then
      record(p .. KEY.start_window .. check[1], now, id .. '@' .. now,
        check[3] + start_margin(check[3]))
    end
  end
  return 0
end

--[[ block_gate(KEYS[1]=prefix; ARGV: id, ms, now)
The running task id met an external limit (StreaqRateLimited): its function's gate -- its
group's, with group limits -- admits nothing for ms. ]]
local function block_gate(keys, args)
  local p = keys[1]
  local id, ms, now = args[1], tonumber(args[2]), tonumber(args[3])
  local raw = redis.call('HGET', p .. KEY.admitted, id)
  if not raw then return 0 end
  local fn, key = unpack(cmsgpack.unpack(raw))
  local gate = key and gate_name(fn, key) or gate_name(fn)
  redis.call('SET', p .. KEY.gate_block .. gate, 1, 'PX', ms)
  set_timer(p, fn, now + ms)
  return 1
end

-- flow_info(KEYS[1]=prefix; ARGV: groups, the most group keys to list per function), read only:
-- whether the queue is paused (0/1), then per configured function {fn, msgpack configuration,
-- admitted and not ended, waiting, {group key, waiting, ...}}
local function flow_info(keys, args)
  local p = keys[1]
  local most = tonumber(args[1])
  local all = limits_of(p, '*')
  local out = {(all and all.paused == 1) and 1 or 0}
  local flat = redis.call('HGETALL', p .. KEY.limits)
  for n = 1, #flat, 2 do
    local fn = flat[n]
    if fn ~= '*' then
      local cfg = cmsgpack.unpack(flat[n + 1])
      local groups, waiting = {}, 0
      for m, key in ipairs(redis.call('LRANGE', p .. KEY.gate_ring .. fn, 0, -1)) do
        local gate = grouped(cfg) and gate_name(fn, key) or gate_name(fn)
        local depth = redis.call('LLEN', p .. KEY.gate_queue .. gate)
        waiting = waiting + depth
        if grouped(cfg) and m <= most then
          groups[#groups + 1] = key
          groups[#groups + 1] = depth
        end
      end
      out[#out + 1] = {fn, flat[n + 1], count(p .. KEY.gate_count .. gate_name(fn)), waiting,
        groups}
    end
  end
  return out
end

-- a concurrency command outlives its delivery this long (ms): a worker that was not subscribed
-- when it was sent reads it once it subscribes again
local SCALE_TTL = 86400000

--[[ scale(KEYS[1]=prefix; ARGV: concurrency, nonce)
Every running worker of the queue sets its concurrency (it hears the scale channel, or reads cc
when it subscribes again). The nonce makes each command distinct, so that a worker applies a
command once and never one older than its own start. ]]
local function scale(keys, args)
  local p = keys[1]
  local command = args[1] .. ':' .. args[2]
  redis.call('SET', p .. KEY.scale, command, 'PX', SCALE_TTL)
  redis.call('PUBLISH', p .. KEY.scale_channel, command)
  return 1
end

register('pause', pause)
register('scale', scale)
register('flow_info', flow_info, true)
register('start_gated', start_gated)
register('block_gate', block_gate)
