#!lua name=__LIBRARY__
--[[
streaq's server-side library: every multi-key state change of a queue is one call here.
The library is loaded as one: this file (the key layout, the shared vocabulary, the helpers),
then flow.lua, tasks.lua, dedup.lua, claims.lua, dead_letters.lua and events.lua
(streaq/_library.py joins them).

All keys of a queue share the prefix KEYS[1] = "streaq:{<queue>}:" (one cluster slot):
  s:<priority>   stream of queued tasks, consumer group "g"; entry fields i=id f=fn d=payload
                 c=created ms l=ttl ms, optional r=tries so far, le=last error, x=expire deadline,
                 pk/pv/pi=result kind/payload/id of the parent feeding a `then` link (copied to
                 the link's `otherwise` fallbacks too, which run with the link's arguments),
                 cr=crontab of a repeating task (re-placed after every finish, same id)
  t              hash id -> msgpack {state, priority, msgid | fields, run_at}; state q (in a stream),
                 d (delayed), w (waiting for dependencies). One live task per id: enqueue refuses
                 an id that is in the index already.
  run:<priority> set of the ids of that stream's messages a worker has *started* (a claimed
                 message not in it is prefetched); written in the finish call's batches
  r:<id>         result record (string, TTL from the task's ttl)
  z              delayed tasks: zset id by due time (ms)
  dp:<id>        set of unfinished dependencies of id;  dn:<id>  set of its dependents
  hd             set of ids that have dependents (lets `finish` skip the dn lookup otherwise)
  ab             set of running ids asked to abort
  u:<fn>         unique lock of a function, value = id of the running holder, TTL = its lease
  dd:<name>      record of a dedup key (dedup.lua);  ddi  hash id -> dedup key name
  cc             the last fleet-wide concurrency command, '<n>:<nonce>' (flow.lua: scale)
  workers        hash worker id -> last heartbeat (ms)
  wi:<worker>    what a worker reports of itself with each heartbeat (JSON: host, pid, backend,
                 concurrency, running task ids); TTL an hour, deleted when the worker retires
  gm:<group>     list of the member ids of a group, in member order (groups.lua)
  gr:<group>     hash member id -> result record of the members of a group that finished
  fc:<id>        the call of a failed task: msgpack {priority, fields} of its last stream entry,
                 kept while its failed result is (TTL from the task's ttl, at most KEPT_CALL_MAX
                 when results are kept forever), so that it can be shown and retried
  dlq            stream of dead letters: original fields + reason, time, priority, tries, worker
  ev             the queue's event stream: one entry per transition of a task (emit), written by
                 the call that makes it, about ARGV[1] entries at most (MAXLEN ~), TTL
                 EVENTS_KEPT from the last event; fields k=kind i=id f=fn t=time r=tries,
                 v=a progress event's value
  pg:<id>        the latest progress a running task reported (its encoded value); while running a
                 TTL of PROGRESS_RUNNING_TTL, renewed by each report, then as long as its result
  pgd            set of the ids of unfinished tasks with a pg:<id> key (lets the calls that write
                 results skip the progress otherwise)
Channels: done (msgpack array of [id, record | nil] after results are written), abort (task id),
wake (due time of a delayed task that became the earliest), pause (a function paused or resumed),
scale (a concurrency command, as in cc).

Every function that writes takes the bound of the event stream first (ARGV[1], removed before
the function sees its arguments; 0 writes no events): see register.

Ownership: a claimed message belongs to the consumer (worker) in whose pending list it is. Only
that consumer applies an outcome to it (finish, dead_letter check it first), so an outcome sent
twice -- a call retried after a lost reply -- or by a worker whose lease lapsed and whose message
another worker took over is a no-op. A worker renews the leases of every message it holds
(running or prefetched) and never takes over its own messages (reclaim).

A result record is a msgpack array [fn, created, enqueued, kind, start, finish, tries, worker,
payload]; kind 0 = value, 1 = tuple value, 2 = exception record [type, module, message, traceback],
3 and 4 = the outcome of a group (groups.lua), fed as its members' values (3) or results (4).
Lua builds records only for failures it decides itself (abort, failed dependency), with cmsgpack for
the header and a ready payload; it never repacks a payload it did not make.
]]

-- The vocabulary shared with Python (streaq/_schema.py and streaq/_keys.py; tests/test_schema.py
-- checks that both sides agree): code below uses these names, never the letters.
local KEY = {
  stream = 's:', tasks = 't', running = 'run:', result = 'r:', delayed = 'z',
  dependencies = 'dp:', dependents = 'dn:', has_dependents = 'hd', abort = 'ab', lock = 'u:',
  workers = 'workers', dead_letters = 'dlq', done_channel = 'done', abort_channel = 'abort',
  wake_channel = 'wake', limits = 'lim', gate_queue = 'gq:', gate_ring = 'gk:',
  gated_functions = 'gw', gate_count = 'gc:', admit_window = 'ga:', start_window = 'gs:',
  gate_block = 'gb:', admitted = 'adm', gated_total = 'gn', gate_timers = 'gt',
  pause_channel = 'pause', dedup = 'dd:', dedup_index = 'ddi', scale = 'cc',
  scale_channel = 'scale', worker_info = 'wi:', failed_call = 'fc:', group_members = 'gm:',
  group_results = 'gr:',
  events = 'ev', progress = 'pg:', progressed = 'pgd',
}
local STATE = {queued = 'q', delayed = 'd', waiting = 'w', gated = 'g'}
local OUTCOME = {result = 'r', ['repeat'] = 'c', retry = 'y', hand_back = 'h', cancelled = 'x'}
local FIELD = {
  id = 'i', fn = 'f', payload = 'd', created = 'c', ttl = 'l', tries = 'r', last_error = 'le',
  expire = 'x', link = 'k', parent_kind = 'pk', parent_value = 'pv', parent_id = 'pi',
  crontab = 'cr', trace = 'tc', group = 'g',
}
local LINK = {['then'] = 't', otherwise = 'o', group = 'g', all = 'a'}
-- the dedup modes of a task's dedup key, and what enqueue answers for such a task (dedup.lua)
local DEDUP = {throttle = 't', debounce = 'd', keep_last = 'l'}
local DEDUPED = {enqueued = 1, dropped = 3, replaced = 4, follows = 5}
-- the kinds of a result record
local KIND = {value = 0, tuple = 1, error = 2, values = 3, results = 4}
-- the kinds of an event of the event stream, and the fields of its entries (streaq/_schema.py)
local EVENT = {
  enqueued = 'q', started = 's', progress = 'p', retried = 'y', finished = 'd', failed = 'f',
  aborted = 'a', dead_lettered = 'l',
}
local EVENT_FIELD = {kind = 'k', id = 'i', fn = 'f', time = 't', tries = 'r', value = 'v'}

local GROUP = 'g'

-- the flow configurations read by this call (flow.lua); each call starts afresh (register)
local lim_cache = {}
-- the bound of the event stream for this call (0: no events), whether the call wrote an event,
-- and whether the set of tasks with progress exists (nil: not looked up yet)
local events_bound = 0
local events_written = false
local progressed_known = nil

-- how long the event stream is kept after its last event (ms)
local EVENTS_KEPT = 7 * 24 * 3600 * 1000

-- register a function of the library; every call of it starts afresh. A writing function takes
-- the bound of the event stream as ARGV[1] (removed here), and renews the stream's TTL once
-- when it wrote events
local function register(name, callback, read_only)
  if read_only then
    local function entry_ro(keys, args)
      lim_cache = {}
      return callback(keys, args)
    end
    redis.register_function{function_name = '__PREFIX__' .. name, callback = entry_ro,
      flags = {'no-writes'}}
    return
  end
  local function entry(keys, args)
    lim_cache = {}
    events_bound = tonumber(table.remove(args, 1)) or 0
    events_written = false
    progressed_known = nil
    local reply = callback(keys, args)
    if events_written then redis.call('PEXPIRE', keys[1] .. KEY.events, EVENTS_KEPT) end
    return reply
  end
  redis.register_function('__PREFIX__' .. name, entry)
end

local function tasks_key(p) return p .. KEY.tasks end
local function stream_key(p, prio) return p .. KEY.stream .. prio end

-- the byte length of the msgpack scalar at pos (strings, ints, bools, nil, floats only)
local function scalar_len(s, pos)
  local b = string.byte(s, pos)
  if b <= 0x7f or b >= 0xe0 or b == 0xc0 or b == 0xc2 or b == 0xc3 then return 1 end
  if b >= 0xa0 and b <= 0xbf then return 1 + (b - 0xa0) end
  if b == 0xd9 then return 2 + string.byte(s, pos + 1) end
  if b == 0xda then return 3 + struct.unpack('>I2', s, pos + 1) end
  if b == 0xdb then return 5 + struct.unpack('>I4', s, pos + 1) end
  if b == 0xcc or b == 0xd0 then return 2 end
  if b == 0xcd or b == 0xd1 then return 3 end
  if b == 0xce or b == 0xd2 or b == 0xca then return 5 end
  if b == 0xcf or b == 0xd3 or b == 0xcb then return 9 end
  error('streaq: unexpected msgpack byte ' .. b)
end

-- kind and payload of a result record
local function split_record(rec)
  local pos = 2
  local kind
  for n = 1, 8 do
    if n == 4 then kind = string.byte(rec, pos) end
    pos = pos + scalar_len(rec, pos)
  end
  return kind, string.sub(rec, pos)
end

local function bin(s)
  local n = #s
  if n < 256 then return '\196' .. string.char(n) .. s end
  if n < 65536 then return '\197' .. struct.pack('>I2', n) .. s end
  return '\198' .. struct.pack('>I4', n) .. s
end

local function field(fields, name)
  for n = 1, #fields, 2 do
    if fields[n] == name then return fields[n + 1] end
  end
  return nil
end

local function set_field(fields, name, value)
  for n = 1, #fields, 2 do
    if fields[n] == name then fields[n + 1] = value; return end
  end
  fields[#fields + 1] = name
  fields[#fields + 1] = value
end

-- the index entry of id as {state, prio, msgid | fields, run_at}, or nil when there is none or it
-- is not one this library understands (every caller treats such an id as absent)
local function load_state(p, id)
  local raw = redis.call('HGET', tasks_key(p), id)
  if not raw then return nil end
  local ok, st = pcall(cmsgpack.unpack, raw)
  if not ok or type(st) ~= 'table' or type(st[2]) ~= 'string' then return nil end
  local state = st[1]
  if state == STATE.queued then
    if type(st[3]) ~= 'string' then return nil end
  elseif state == STATE.delayed or state == STATE.waiting or state == STATE.gated then
    if type(st[3]) ~= 'table' then return nil end
  else
    return nil
  end
  return st
end

-- whether the message msgid of stream skey is in the pending list of consumer worker
local function owns(skey, msgid, worker)
  return redis.call('XPENDING', skey, GROUP, msgid, msgid, 1, worker)[1] ~= nil
end

local function running_key(p, prio) return p .. KEY.running .. prio end

-- the messages of stream skey that consumer worker holds, as a set, from one XPENDING; nil when it
-- holds too many to list at once (then each message is checked with owns)
local HELD_LIST = 1000
local function held_by(skey, worker)
  local pending = redis.call('XPENDING', skey, GROUP, '-', '+', HELD_LIST, worker)
  if #pending >= HELD_LIST then return nil end
  local set = {}
  for _, entry in ipairs(pending) do set[entry[1]] = true end
  return set
end

-- the longest the call of a failed task is kept (ms) when its result is kept forever: arguments
-- may be personal data, and nothing of a queue should stay without an expiry
local KEPT_CALL_MAX = 7 * 24 * 3600 * 1000

-- append an event to the event stream (value: a progress event's encoded value)
local function emit(p, kind, id, fn, now, tries, value)
  if events_bound <= 0 then return end
  local entry = {EVENT_FIELD.kind, kind, EVENT_FIELD.id, id, EVENT_FIELD.fn, fn or '',
    EVENT_FIELD.time, now, EVENT_FIELD.tries, tries or 0}
  if value then
    entry[#entry + 1] = EVENT_FIELD.value
    entry[#entry + 1] = value
  end
  redis.call('XADD', p .. KEY.events, 'MAXLEN', '~', events_bound, '*', unpack(entry))
  events_written = true
end

-- an event of the task id whose stream fields are known
local function emit_for(p, kind, id, fields, now)
  if events_bound <= 0 then return end
  emit(p, kind, id, field(fields, FIELD.fn), now, tonumber(field(fields, FIELD.tries) or '0'))
end

-- the function name, kind and tries of a result record
local function record_head(rec)
  local pos, head = 2, {}
  for n = 1, 7 do
    local len = scalar_len(rec, pos)
    if n == 1 or n == 4 or n == 7 then
      head[n] = cmsgpack.unpack(string.sub(rec, pos, pos + len - 1))
    end
    pos = pos + len
  end
  return head[1], head[4], head[7]
end

-- the event of a result written for id: finished, failed, or aborted (a failure of a task asked
-- to abort, which must still be in the abort set)
local function emit_result(p, id, rec, now)
  if events_bound <= 0 then return end
  local ok, fn, kind, tries = pcall(record_head, rec)
  if not ok then fn, kind, tries = '', KIND.error, 0 end
  local event = EVENT.finished
  if kind == KIND.error then
    event = EVENT.failed
    if redis.call('SISMEMBER', p .. KEY.abort, id) == 1 then event = EVENT.aborted end
  end
  emit(p, event, id, fn, now, tries)
end

-- the progress of a task whose result is written lives as long as the result (at most
-- KEPT_CALL_MAX when the result is kept forever; deleted when it is not stored)
local function end_progress(p, id, ttl)
  if progressed_known == nil then
    progressed_known = redis.call('EXISTS', p .. KEY.progressed) == 1
  end
  if not progressed_known or redis.call('SREM', p .. KEY.progressed, id) == 0 then return end
  local key = p .. KEY.progress .. id
  if ttl == 0 then
    redis.call('DEL', key)
  else
    if ttl == nil or ttl < 0 or ttl > KEPT_CALL_MAX then ttl = KEPT_CALL_MAX end
    redis.call('PEXPIRE', key, ttl)
  end
end

local function store_result(p, id, rec, ttl, published)
  ttl = tonumber(ttl)
  end_progress(p, id, ttl)
  if ttl == nil or ttl < 0 then
    redis.call('SET', p .. KEY.result .. id, rec)
  elseif ttl > 0 then
    redis.call('SET', p .. KEY.result .. id, rec, 'PX', ttl)
  end
  -- a result that is not stored travels in the notification itself
  if ttl == 0 then
    published[#published + 1] = '\146' .. cmsgpack.pack(id) .. bin(rec)
  else
    published[#published + 1] = '\146' .. cmsgpack.pack(id) .. '\192'
  end
end

-- the msgpack header of an array of n elements
local function array_head(n)
  if n < 16 then return string.char(0x90 + n) end
  if n < 65536 then return '\220' .. struct.pack('>I2', n) end
  return '\221' .. struct.pack('>I4', n)
end

local function publish(p, published)
  if #published == 0 then return end
  redis.call('PUBLISH', p .. KEY.done_channel, array_head(#published) .. table.concat(published))
end

local function failure_payload(type_name, message)
  return cmsgpack.pack({type_name, 'streaq.types', message, ''})
end

-- flow control (flow.lua): whether a function's tasks wait at a gate, and putting them there
local is_gated, gate_push
-- dedup (dedup.lua): enqueueing a task with a dedup key; a task that held or followed a dedup
-- key ended (failed or not)
local dedup_enqueue, dedup_ended
-- groups (groups.lua): a member of a group finished; a group finished; what a group's outcome
-- means to a task linked to it
local group_member_done, complete_group, group_effect

-- put a task into the delayed set (due at run_at), announcing it when it is the earliest
local function delay(p, member, run_at)
  redis.call('ZADD', p .. KEY.delayed, run_at, member)
  local first = redis.call('ZRANGE', p .. KEY.delayed, 0, 0)
  if first[1] == member then redis.call('PUBLISH', p .. KEY.wake_channel, run_at) end
end

-- put a task into its stream now and index it
local function add_to_stream(p, id, prio, fields)
  local msgid = redis.call('XADD', stream_key(p, prio), '*', unpack(fields))
  redis.call('HSET', tasks_key(p), id, cmsgpack.pack({STATE.queued, prio, msgid}))
end

-- put a task whose fields are known into its stream, its gate or the delayed set, and index it
local function place(p, id, prio, fields, run_at, now)
  if run_at > now then
    redis.call('HSET', tasks_key(p), id, cmsgpack.pack({STATE.delayed, prio, fields, run_at}))
    delay(p, id, run_at)
  elseif is_gated(p, field(fields, FIELD.fn)) then
    gate_push(p, id, prio, fields, now)
  else
    add_to_stream(p, id, prio, fields)
  end
end

-- a `then` link got its parent's result: its pending `otherwise` fallbacks (transitively) run
-- with the link's arguments, so they get the same parent value
local function pass_to_fallbacks(p, id, kind, payload, parent)
  local stack = {id}
  while #stack > 0 do
    local cur = table.remove(stack)
    for _, fb in ipairs(redis.call('SMEMBERS', p .. KEY.dependents .. cur)) do
      local st = load_state(p, fb)
      if st then
        local fields = st[3]
        if st[1] == STATE.waiting and field(fields, FIELD.link) == LINK.otherwise then
          set_field(fields, FIELD.parent_kind, kind)
          set_field(fields, FIELD.parent_value, payload)
          set_field(fields, FIELD.parent_id, parent)
          redis.call('HSET', tasks_key(p), fb,
            cmsgpack.pack({STATE.waiting, st[2], fields, st[4] or 0}))
          stack[#stack + 1] = fb
        end
      end
    end
  end
end

-- the fields of an unfinished task (from its stream entry when queued)
local function task_fields(p, st)
  if st[1] == STATE.queued then
    local entries = redis.call('XRANGE', stream_key(p, st[2]), st[3], st[3])
    if entries[1] then return entries[1][2] end
    return {}
  end
  return st[3]
end

-- release the unique lock of fn if id holds it
local function release_unique(p, fn, id)
  local lock = p .. KEY.lock .. fn
  if redis.call('GET', lock) == id then redis.call('DEL', lock) end
end

local resolve_dependents

-- keep the call (priority and fields) of the failed task id as long as its result (ttl ms: -1
-- forever, 0 not stored); the fields are kept as written, so encrypted arguments stay encrypted
local function keep_call(p, id, prio, fields, ttl)
  ttl = tonumber(ttl)
  if ttl == nil or ttl == 0 or not fields then return end
  if ttl < 0 or ttl > KEPT_CALL_MAX then ttl = KEPT_CALL_MAX end
  redis.call('SET', p .. KEY.failed_call .. id, cmsgpack.pack({prio or '', fields}), 'PX', ttl)
end

-- write a failed result decided here (abort, failed dependency) and cascade to dependents;
-- event is its kind (aborted or failed)
local function fail_task(p, id, fields, payload, now, published, worklist, prio, event)
  emit_for(p, event, id, fields, now)
  local rec = '\153' .. cmsgpack.pack(field(fields, FIELD.fn),
    tonumber(field(fields, FIELD.created)), now, KIND.error, 0, now,
    tonumber(field(fields, FIELD.tries) or '0'), '') .. payload
  store_result(p, id, rec, field(fields, FIELD.ttl), published)
  if field(fields, FIELD.link) == LINK.group then
    -- a group is never run: nothing to keep for a retry; its members' results go with it
    redis.call('DEL', p .. KEY.group_members .. id, p .. KEY.group_results .. id)
  else
    keep_call(p, id, prio, fields, field(fields, FIELD.ttl))
  end
  redis.call('HDEL', tasks_key(p), id)
  redis.call('DEL', p .. KEY.dependencies .. id)
  dedup_ended(p, id, now, true)
  worklist[#worklist + 1] = {id, KIND.error, payload, rec}
end

-- a task finished (worklist items {id, kind, payload, record}): release or fail the tasks that
-- wait on it, transitively
resolve_dependents = function(p, now, worklist, published)
  local idx = 1
  while idx <= #worklist do
    local parent, parent_kind, payload = worklist[idx][1], worklist[idx][2], worklist[idx][3]
    local parent_rec = worklist[idx][4]
    idx = idx + 1
    local dn = p .. KEY.dependents .. parent
    local children = redis.call('SMEMBERS', dn)
    redis.call('DEL', dn)
    redis.call('SREM', p .. KEY.has_dependents, parent)
    for _, child in ipairs(children) do
      local st = load_state(p, child)
      -- only a task still waiting for its dependencies is released or failed here
      local fields = st and st[3]
      local link = st and field(fields, FIELD.link)
      -- what a group's outcome means to this link: a failure, its values or its results
      local kind, why = group_effect(parent, parent_kind, payload, link)
      if st and st[1] == STATE.waiting and link == LINK.group then
        group_member_done(p, child, st, parent, parent_rec, now, published, worklist)
      elseif st and st[1] == STATE.waiting then
        if kind == KIND.error and link ~= LINK.otherwise then
          fail_task(p, child, fields, failure_payload('StreaqError',
            why or ('dependency ' .. parent .. ' failed')), now, published, worklist, st[2], EVENT.failed)
        elseif kind ~= KIND.error and link == LINK.otherwise then
          -- the fallback is not needed: it ends with its parent's result
          local rec = '\153' .. cmsgpack.pack(field(fields, FIELD.fn),
            tonumber(field(fields, FIELD.created)),
            now, kind, now, now, 0, '') .. payload
          store_result(p, child, rec, field(fields, FIELD.ttl), published)
          emit_result(p, child, rec, now)
          redis.call('HDEL', tasks_key(p), child)
          redis.call('DEL', p .. KEY.dependencies .. child)
          worklist[#worklist + 1] = {child, kind, payload, rec}
        else
          if link == LINK['then'] or link == LINK.all then
            set_field(fields, FIELD.parent_kind, kind)
            set_field(fields, FIELD.parent_value, payload)
            set_field(fields, FIELD.parent_id, parent)
            pass_to_fallbacks(p, child, kind, payload, parent)
          end
          local dp = p .. KEY.dependencies .. child
          redis.call('SREM', dp, parent)
          if redis.call('SCARD', dp) == 0 then
            redis.call('DEL', dp)
            place(p, child, st[2], fields, st[4] or 0, now)
          else
            redis.call('HSET', tasks_key(p), child,
              cmsgpack.pack({STATE.waiting, st[2], fields, st[4] or 0}))
          end
        end
      end
    end
  end
end
