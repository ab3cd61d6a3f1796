#!lua name=__LIBRARY__
--[[
streaq's server-side library: every multi-key state change of a queue is one call here.

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
  workers        hash worker id -> last heartbeat (ms)
  dlq            stream of dead letters: original fields + reason, time, priority, tries, worker
Channels: done (msgpack array of [id, record | nil] after results are written), abort (task id),
wake (due time of a delayed task that became the earliest).

Ownership: a claimed message belongs to the consumer (worker) in whose pending list it is. Only
that consumer applies an outcome to it (finish, dead_letter check it first), so an outcome sent
twice -- a call retried after a lost reply -- or by a worker whose lease lapsed and whose message
another worker took over is a no-op. A worker renews the leases of every message it holds
(running or prefetched) and never takes over its own messages (reclaim).

A result record is a msgpack array [fn, created, enqueued, kind, start, finish, tries, worker,
payload]; kind 0 = value, 1 = tuple value, 2 = exception record [type, module, message, traceback].
Lua builds records only for failures it decides itself (abort, failed dependency), with cmsgpack for
the header and a ready payload; it never repacks a payload it did not make.
]]

-- The vocabulary shared with Python (streaq/_schema.py and streaq/_keys.py; tests/test_schema.py
-- checks that both sides agree): code below uses these names, never the letters.
local KEY = {
  stream = 's:', tasks = 't', running = 'run:', result = 'r:', delayed = 'z',
  dependencies = 'dp:', dependents = 'dn:', has_dependents = 'hd', abort = 'ab', lock = 'u:',
  workers = 'workers', dead_letters = 'dlq', done_channel = 'done', abort_channel = 'abort',
  wake_channel = 'wake',
}
local STATE = {queued = 'q', delayed = 'd', waiting = 'w'}
local OUTCOME = {result = 'r', ['repeat'] = 'c', retry = 'y', hand_back = 'h', cancelled = 'x'}
local FIELD = {
  id = 'i', fn = 'f', payload = 'd', created = 'c', ttl = 'l', tries = 'r', last_error = 'le',
  expire = 'x', link = 'k', parent_kind = 'pk', parent_value = 'pv', parent_id = 'pi',
  crontab = 'cr', trace = 'tc',
}
local LINK = {['then'] = 't', otherwise = 'o'}
-- the kinds of a result record
local KIND = {value = 0, tuple = 1, error = 2}

local GROUP = 'g'

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
  elseif state == STATE.delayed or state == STATE.waiting then
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

local function store_result(p, id, rec, ttl, published)
  ttl = tonumber(ttl)
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

local function publish(p, published)
  if #published == 0 then return end
  local n = #published
  local head
  if n < 16 then head = string.char(0x90 + n)
  elseif n < 65536 then head = '\220' .. struct.pack('>I2', n)
  else head = '\221' .. struct.pack('>I4', n) end
  redis.call('PUBLISH', p .. KEY.done_channel, head .. table.concat(published))
end

local function failure_payload(type_name, message)
  return cmsgpack.pack({type_name, 'streaq.types', message, ''})
end

-- put a task whose fields are known into its stream (or the delayed set) and index it
local function place(p, id, prio, fields, run_at, now)
  if run_at > now then
    redis.call('ZADD', p .. KEY.delayed, run_at, id)
    redis.call('HSET', tasks_key(p), id, cmsgpack.pack({STATE.delayed, prio, fields, run_at}))
    local first = redis.call('ZRANGE', p .. KEY.delayed, 0, 0)
    if first[1] == id then redis.call('PUBLISH', p .. KEY.wake_channel, run_at) end
  else
    local msgid = redis.call('XADD', stream_key(p, prio), '*', unpack(fields))
    redis.call('HSET', tasks_key(p), id, cmsgpack.pack({STATE.queued, prio, msgid}))
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

-- write a failed result decided here (abort, failed dependency) and cascade to dependents
local function fail_task(p, id, fields, payload, now, published, worklist)
  local rec = '\153' .. cmsgpack.pack(field(fields, FIELD.fn),
    tonumber(field(fields, FIELD.created)), now, KIND.error, 0, now,
    tonumber(field(fields, FIELD.tries) or '0'), '') .. payload
  store_result(p, id, rec, field(fields, FIELD.ttl), published)
  redis.call('HDEL', tasks_key(p), id)
  redis.call('DEL', p .. KEY.dependencies .. id)
  worklist[#worklist + 1] = {id, 2, payload}
end

-- a task finished (kind, payload): release or fail the tasks that wait on it, transitively
resolve_dependents = function(p, now, worklist, published)
  local idx = 1
  while idx <= #worklist do
    local parent, kind, payload = worklist[idx][1], worklist[idx][2], worklist[idx][3]
    idx = idx + 1
    local dn = p .. KEY.dependents .. parent
    local children = redis.call('SMEMBERS', dn)
    redis.call('DEL', dn)
    redis.call('SREM', p .. KEY.has_dependents, parent)
    for _, child in ipairs(children) do
      local st = load_state(p, child)
      -- only a task still waiting for its dependencies is released or failed here
      if st and st[1] == STATE.waiting then
        local fields = st[3]
        local link = field(fields, FIELD.link)
        if kind == KIND.error and link ~= LINK.otherwise then
          fail_task(p, child, fields, failure_payload('StreaqError',
            'dependency ' .. parent .. ' failed'), now, published, worklist)
        elseif kind ~= KIND.error and link == LINK.otherwise then
          -- the fallback is not needed: it ends with its parent's result
          local rec = '\153' .. cmsgpack.pack(field(fields, FIELD.fn),
            tonumber(field(fields, FIELD.created)),
            now, kind, now, now, 0, '') .. payload
          store_result(p, child, rec, field(fields, FIELD.ttl), published)
          redis.call('HDEL', tasks_key(p), child)
          redis.call('DEL', p .. KEY.dependencies .. child)
          worklist[#worklist + 1] = {child, kind, payload}
        else
          if link == LINK['then'] then
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

--[[ enqueue(KEYS[1]=prefix; ARGV: now, then one msgpack blob per task:
  [id, priority, run_at, dependencies, origin, fields])
origin says where the id comes from: ID_GIVEN (the caller chose it), ID_FIRING (a cron firing:
skipped when a task or result of that id exists) or ID_FRESH (a random id made by the producer,
which no other task can hold: nothing to check).
Returns one integer per task: 1 enqueued, 0 skipped (id exists), 2 failed at once (dependency failed).
Errors (nothing written) on an unknown dependency, on a given id that a live task (one in the
index) holds, and on an id the batch holds twice: a live task is never overwritten. A finished
task's id may be given again: its old result is deleted, so that waiters wait for the new run. ]]
local ID_GIVEN, ID_FIRING, ID_FRESH = 0, 1, 2
local function enqueue(keys, args)
  local p = keys[1]
  local now = tonumber(args[1])
  local tasks = {}
  local batch_ids = {}
  for n = 2, #args do
    local t = cmsgpack.unpack(args[n])
    local id = t[1]
    tasks[#tasks + 1] = t
    if batch_ids[id] then
      return redis.error_reply('STREAQ task id ' .. id .. ' is given to two tasks of one enqueue')
    end
    if t[5] == ID_GIVEN and redis.call('HEXISTS', tasks_key(p), id) == 1 then
      return redis.error_reply('STREAQ task id ' .. id .. ' is taken by a task that has not ' ..
        'finished (queued, scheduled or running); abort it or wait for its result first')
    end
    for _, dep in ipairs(t[4]) do
      if not batch_ids[dep] and redis.call('HEXISTS', tasks_key(p), dep) == 0
          and redis.call('EXISTS', p .. KEY.result .. dep) == 0 then
        return redis.error_reply('STREAQ unknown dependency ' .. dep .. ' of task ' .. t[1])
      end
    end
    batch_ids[t[1]] = true
  end
  local out = {}
  local published = {}
  local pending_ids, pending_vals = {}, {}
  for n, t in ipairs(tasks) do
    local id, prio, run_at, deps, origin, fields = t[1], t[2], tonumber(t[3]), t[4], t[5], t[6]
    local skip = false
    if origin == ID_FIRING then
      skip = redis.call('HEXISTS', tasks_key(p), id) == 1
        or redis.call('EXISTS', p .. KEY.result .. id) == 1
    elseif origin == ID_GIVEN then
      redis.call('DEL', p .. KEY.result .. id)
    end
    if skip then
      out[n] = 0
    elseif #deps == 0 then
      out[n] = 1
      if run_at > now then
        place(p, id, prio, fields, run_at, now)
      else
        local msgid = redis.call('XADD', stream_key(p, prio), '*', unpack(fields))
        pending_ids[#pending_ids + 1] = id
        pending_vals[#pending_vals + 1] = cmsgpack.pack({STATE.queued, prio, msgid})
      end
    else
      out[n] = 1
      -- index the earlier tasks of this batch first: they may be this task's dependencies
      if #pending_ids > 0 then
        local flat = {}
        for m = 1, #pending_ids do flat[#flat + 1] = pending_ids[m]; flat[#flat + 1] = pending_vals[m] end
        redis.call('HSET', tasks_key(p), unpack(flat))
        pending_ids, pending_vals = {}, {}
      end
      local waiting = 0
      local failed_dep = nil
      local link = field(fields, FIELD.link)
      for _, dep in ipairs(deps) do
        local dep_st = load_state(p, dep)
        if dep_st then
          waiting = waiting + 1
          if link == LINK.otherwise then
            -- a fallback runs with its task's arguments, parent value included
            local dep_fields = task_fields(p, dep_st)
            local pk = field(dep_fields, FIELD.parent_kind)
            if pk then
              set_field(fields, FIELD.parent_kind, pk)
              set_field(fields, FIELD.parent_value, field(dep_fields, FIELD.parent_value))
              set_field(fields, FIELD.parent_id, field(dep_fields, FIELD.parent_id))
            end
          end
          redis.call('SADD', p .. KEY.dependencies .. id, dep)
          redis.call('SADD', p .. KEY.dependents .. dep, id)
          redis.call('SADD', p .. KEY.has_dependents, dep)
        else
          local rec = redis.call('GET', p .. KEY.result .. dep)
          if rec then
            local kind, payload = split_record(rec)
            if kind == KIND.error and link ~= LINK.otherwise then failed_dep = dep
            elseif link == LINK['then'] then
              set_field(fields, FIELD.parent_kind, kind)
              set_field(fields, FIELD.parent_value, payload)
              set_field(fields, FIELD.parent_id, dep)
            end
          end
        end
      end
      if failed_dep then
        out[n] = 2
        fail_task(p, id, fields, failure_payload('StreaqError',
          'dependency ' .. failed_dep .. ' failed'), now, published, {})
      elseif waiting > 0 then
        redis.call('HSET', tasks_key(p), id, cmsgpack.pack({STATE.waiting, prio, fields, run_at}))
      else
        place(p, id, prio, fields, run_at, now)
      end
    end
  end
  if #pending_ids > 0 then
    local flat = {}
    for m = 1, #pending_ids do flat[#flat + 1] = pending_ids[m]; flat[#flat + 1] = pending_vals[m] end
    redis.call('HSET', tasks_key(p), unpack(flat))
  end
  publish(p, published)
  return out
end

--[[ finish(KEYS[1]=prefix; ARGV: worker, now, n, then n pairs priority, id of tasks the worker
started, then groups of 7: id, priority, msgid, outcome, a, b, c
outcome 'r' (result): a = record, b = ttl ms (-1 keep, 0 publish only)
outcome 'c' (result of a repeating task, which runs again): a = record,
                      b = msgpack [ttl ms, next run_at, fields]
outcome 'y' (retry):  a = msgpack fields, b = run_at
outcome 'h' (hand back for immediate redelivery): a = msgpack fields, b unused
c = the function's name when it is unique (its lock is released if this task holds it), else ''.
An outcome is applied only while the worker owns the message (see Ownership): otherwise the group
is skipped, which makes a repeated call a no-op. A task asked to abort (in `ab`) is not retried,
handed back or repeated: it ends with a StreaqCancelled result instead (or the result it reached).
Returns [results written, finished tasks whose dependents were released or failed, groups
skipped]. ]]
local function finish(keys, args)
  local p = keys[1]
  local worker, now = args[1], tonumber(args[2])
  local marks = tonumber(args[3])
  for n = 4, 3 + 2 * marks, 2 do
    redis.call('SADD', running_key(p, args[n]), args[n + 1])
  end
  local acks = {}
  local done_ids = {}
  local done_records = {}
  local published = {}
  local worklist = {}
  local repeats = {}
  local cancelled = {}
  local written, released, skipped = 0, 0, 0
  local held = {}
  for n = 4 + 2 * marks, #args, 7 do
    local id, prio, msgid, outcome = args[n], args[n + 1], args[n + 2], args[n + 3]
    local a, b, c = args[n + 4], args[n + 5], args[n + 6]
    local skey = stream_key(p, prio)
    if held[prio] == nil then held[prio] = held_by(skey, worker) or false end
    local mine = held[prio]
    local owned
    if mine then
      owned = mine[msgid] == true
      mine[msgid] = nil  -- applied once, even if the call names it twice
    else
      owned = owns(skey, msgid, worker) and not (acks[prio] and acks[prio].seen[msgid])
    end
    if not owned then
      skipped = skipped + 1
    else
      acks[prio] = acks[prio] or {ids = {}, tasks = {}, seen = {}}
      table.insert(acks[prio].ids, msgid)
      table.insert(acks[prio].tasks, id)
      acks[prio].seen[msgid] = true
      if outcome ~= OUTCOME.result and redis.call('SISMEMBER', p .. KEY.abort, id) == 1 then
        if outcome == OUTCOME['repeat'] then
          b = cmsgpack.unpack(b)[1]
          outcome = OUTCOME.result
        else
          cancelled[#cancelled + 1] = {id, cmsgpack.unpack(a)}
          outcome = OUTCOME.cancelled
        end
      end
      if outcome == OUTCOME.result then
        store_result(p, id, a, b, published)
        done_ids[#done_ids + 1] = id
        done_records[id] = a
        written = written + 1
      elseif outcome == OUTCOME['repeat'] then
        local spec = cmsgpack.unpack(b)
        store_result(p, id, a, spec[1], published)
        done_ids[#done_ids + 1] = id
        done_records[id] = a
        repeats[#repeats + 1] = {id, prio, spec[3], tonumber(spec[2])}
        written = written + 1
      elseif outcome == OUTCOME.retry then
        place(p, id, prio, cmsgpack.unpack(a), tonumber(b), now)
      elseif outcome == OUTCOME.hand_back then
        place(p, id, prio, cmsgpack.unpack(a), 0, now)
      end
      if c ~= '' then release_unique(p, c, id) end
    end
  end
  for prio, owned in pairs(acks) do
    local skey = stream_key(p, prio)
    redis.call('XACK', skey, GROUP, unpack(owned.ids))
    redis.call('XDEL', skey, unpack(owned.ids))
    redis.call('SREM', running_key(p, prio), unpack(owned.tasks))
  end
  if #done_ids > 0 then
    redis.call('HDEL', tasks_key(p), unpack(done_ids))
    redis.call('SREM', p .. KEY.abort, unpack(done_ids))
    local parents = redis.call('SMISMEMBER', p .. KEY.has_dependents, unpack(done_ids))
    for m, flag in ipairs(parents) do
      if flag == 1 then
        released = released + 1
        local id = done_ids[m]
        local kind, payload = split_record(done_records[id])
        worklist[#worklist + 1] = {id, kind, payload}
      end
    end
  end
  for _, item in ipairs(cancelled) do
    released = released + redis.call('SISMEMBER', p .. KEY.has_dependents, item[1])
    redis.call('SREM', p .. KEY.abort, item[1])
    fail_task(p, item[1], item[2], failure_payload('StreaqCancelled', 'task aborted'), now,
      published, worklist)
    written = written + 1
  end
  resolve_dependents(p, now, worklist, published)
  for _, item in ipairs(repeats) do
    place(p, item[1], item[2], item[3], item[4], now)
  end
  publish(p, published)
  return {written, released, skipped}
end

--[[ unique(KEYS[1]=prefix; ARGV: fn, id, lease ms, idle ms)
Takes the function's lock for id, for at most lease ms (the task's timeout plus the idle timeout:
the lock outlives no run). The lock is free when nobody holds it, id holds it already (a
redelivery), or its holder is not running any more: not a live task, not claimed, or claimed by a
worker that stopped renewing its lease (idle longer than idle ms: it died). Returns 1 when id may
run, 0 when another running instance holds the lock. ]]
local function unique(keys, args)
  local p = keys[1]
  local fn, id, lease, idle = args[1], args[2], args[3], tonumber(args[4])
  local lock = p .. KEY.lock .. fn
  local holder = redis.call('GET', lock)
  if holder and holder ~= id then
    local st = load_state(p, holder)
    if st and st[1] == STATE.queued then
      local entry = redis.call('XPENDING', stream_key(p, st[2]), GROUP, st[3], st[3], 1)[1]
      if entry and entry[3] < idle then return 0 end
    end
  end
  redis.call('SET', lock, id, 'PX', lease)
  return 1
end

-- remove a task that is not running from wherever it waits; returns its fields or nil
local function unlink(p, id, st)
  local state, prio = st[1], st[2]
  if state == STATE.queued then
    local entries = redis.call('XRANGE', stream_key(p, prio), st[3], st[3])
    redis.call('XDEL', stream_key(p, prio), st[3])
    if entries[1] then return entries[1][2] end
    return nil
  elseif state == STATE.delayed then
    redis.call('ZREM', p .. KEY.delayed, id)
  elseif state == STATE.waiting then
    for _, dep in ipairs(redis.call('SMEMBERS', p .. KEY.dependencies .. id)) do
      redis.call('SREM', p .. KEY.dependents .. dep, id)
      if redis.call('EXISTS', p .. KEY.dependents .. dep) == 0 then
        redis.call('SREM', p .. KEY.has_dependents, dep)
      end
    end
  end
  return st[3]
end

-- whether a worker holds (claimed) the message msgid: running or prefetched
local function is_pending(p, prio, msgid)
  return redis.call('XPENDING', stream_key(p, prio), GROUP, msgid, msgid, 1)[1] ~= nil
end

-- abort the unfinished task id (index entry st): 1 aborted here (result written), 2 running
-- (abort requested), -1 gone
local function abort_task(p, id, st, now)
  if st[1] == STATE.queued and is_pending(p, st[2], st[3]) then
    redis.call('SADD', p .. KEY.abort, id)
    -- a repeating task's previous result must not answer those waiting for this run's end
    redis.call('DEL', p .. KEY.result .. id)
    redis.call('PUBLISH', p .. KEY.abort_channel, id)
    return 2
  end
  local fields = unlink(p, id, st)
  if not fields then return -1 end
  local published, worklist = {}, {}
  fail_task(p, id, fields, failure_payload('StreaqCancelled', 'task aborted'), now, published,
    worklist)
  resolve_dependents(p, now, worklist, published)
  publish(p, published)
  return 1
end

--[[ abort(KEYS[1]=prefix; ARGV: id, now)
Returns 0 finished already, -1 unknown, 1 aborted here (result written), 2 running: abort requested. ]]
local function abort(keys, args)
  local p = keys[1]
  local id, now = args[1], tonumber(args[2])
  -- the index first: a repeating task has a result and an index entry between runs
  local st = load_state(p, id)
  if not st then
    -- an index entry this library cannot read would hold the id forever: drop it
    redis.call('HDEL', tasks_key(p), id)
    if redis.call('EXISTS', p .. KEY.result .. id) == 1 then return 0 end
    return -1
  end
  return abort_task(p, id, st, now)
end

--[[ unschedule(KEYS[1]=prefix; ARGV: id, now)
Stops a scheduled task (delayed, waiting on dependencies, or repeating on a crontab in any state):
it ends with a StreaqCancelled result and does not run again. Returns 1 when it was scheduled. ]]
local function unschedule(keys, args)
  local p = keys[1]
  local id, now = args[1], tonumber(args[2])
  local st = load_state(p, id)
  if not st then return 0 end
  if st[1] ~= STATE.delayed and st[1] ~= STATE.waiting
      and not field(task_fields(p, st), FIELD.crontab) then
    return 0
  end
  if abort_task(p, id, st, now) > 0 then return 1 end
  return 0
end

--[[ status(KEYS[1]=prefix; ARGV: id) -> 'done' | 'running' | 'queued' | 'scheduled' | 'missing' ]]
local function status(keys, args)
  local p = keys[1]
  local id = args[1]
  local st = load_state(p, id)
  if not st then
    if redis.call('EXISTS', p .. KEY.result .. id) == 1 then return 'done' end
    return 'missing'
  end
  if st[1] == STATE.queued then
    -- started, not merely claimed: a prefetched message is still queued
    if redis.call('SISMEMBER', running_key(p, st[2]), id) == 1 then return 'running' end
    return 'queued'
  end
  return 'scheduled'
end

--[[ info(KEYS[1]=prefix; ARGV: id) -> nil | [status, priority, fields, run_at, deps, dependents,
  delivery count] ]]
local function info(keys, args)
  local p = keys[1]
  local id = args[1]
  local st = load_state(p, id)
  if not st then return nil end
  local fields = st[3]
  local deliveries = 0
  local state = status(keys, args)
  if st[1] == STATE.queued then
    local entries = redis.call('XRANGE', stream_key(p, st[2]), st[3], st[3])
    if not entries[1] then return nil end
    fields = entries[1][2]
    local pending = redis.call('XPENDING', stream_key(p, st[2]), GROUP, st[3], st[3], 1)
    if pending[1] then deliveries = pending[1][4] end
  end
  return {state, st[2], fields, tostring(st[4] or 0),
    redis.call('SMEMBERS', p .. KEY.dependencies .. id),
    redis.call('SMEMBERS', p .. KEY.dependents .. id), deliveries}
end

--[[ promote(KEYS[1]=prefix; ARGV: now, limit) -> [moved, next due time or -1]
Moves due delayed tasks into their streams. An id in the delayed set whose index entry is not
'delayed' (stale) is only removed from the set. ]]
local function promote(keys, args)
  local p = keys[1]
  local now, limit = tonumber(args[1]), tonumber(args[2])
  local due = redis.call('ZRANGEBYSCORE', p .. KEY.delayed, '-inf', now, 'LIMIT', 0, limit)
  if #due > 0 then redis.call('ZREM', p .. KEY.delayed, unpack(due)) end
  for _, id in ipairs(due) do
    local st = load_state(p, id)
    if st and st[1] == STATE.delayed then place(p, id, st[2], st[3], 0, now) end
  end
  local first = redis.call('ZRANGE', p .. KEY.delayed, 0, 0, 'WITHSCORES')
  local nxt = -1
  if first[2] then nxt = tonumber(first[2]) end
  return {#due, nxt}
end

-- XCLAIM of many message ids (JUSTID: resets their idle time without counting a delivery)
local function claim_ids(skey, worker, min_idle, ids, justid)
  local cmd = {skey, GROUP, worker, min_idle}
  for _, msgid in ipairs(ids) do cmd[#cmd + 1] = msgid end
  if justid then cmd[#cmd + 1] = 'JUSTID' end
  return redis.call('XCLAIM', unpack(cmd))
end

local RECLAIM_SCAN = 100

--[[ reclaim(KEYS[1]=prefix; ARGV: worker, min_idle ms, count, then pairs priority, cursor from
the highest priority down; a cursor is '-' to start a scan or what the previous call returned)
Takes over at most count messages of *other* consumers idle longer than min_idle (their worker
stopped renewing its leases), scanning each stream's pending list from its cursor onwards, so that
idle messages behind many live ones are reached in later calls. This worker's own messages idle
that long are never taken over: their idle time is reset and they are returned apart, for the
worker to tell a message it holds (a lapsed lease) from one it never received (a delivery whose
reply was lost).
Returns {taken, own, cursors}: taken and own hold [priority, msgid, fields, deliveries, abort
requested] per message; cursors one per priority ('-' once its scan wrapped around). ]]
local function reclaim(keys, args)
  local p = keys[1]
  local worker, min_idle, count = args[1], tonumber(args[2]), tonumber(args[3])
  local taken, own, cursors = {}, {}, {}
  for n = 4, #args, 2 do
    local prio, cursor = args[n], args[n + 1]
    local skey = stream_key(p, prio)
    local next_cursor = cursor
    if count > 0 then
      local pending = redis.call('XPENDING', skey, GROUP, 'IDLE', min_idle, cursor, '+',
        RECLAIM_SCAN)
      local theirs, mine, deliveries = {}, {}, {}
      local full = false
      for _, entry in ipairs(pending) do
        if entry[2] == worker then
          mine[#mine + 1] = entry[1]
        elseif #theirs < count then
          theirs[#theirs + 1] = entry[1]
          deliveries[entry[1]] = entry[4] + 1
        else
          full = true
          break
        end
        next_cursor = '(' .. entry[1]
      end
      if not full and #pending < RECLAIM_SCAN then next_cursor = '-' end
      if #theirs > 0 then
        local running = running_key(p, prio)
        for _, claimed in ipairs(claim_ids(skey, worker, min_idle, theirs, false)) do
          local msgid, fields = claimed[1], claimed[2]
          -- an entry deleted from the stream leaves the pending list without a reply
          if type(fields) == 'table' then
            local id = field(fields, FIELD.id) or ''
            redis.call('SREM', running, id)
            taken[#taken + 1] = {prio, msgid, fields, deliveries[msgid],
              redis.call('SISMEMBER', p .. KEY.abort, id)}
            count = count - 1
          end
        end
      end
      if #mine > 0 then
        claim_ids(skey, worker, 0, mine, true)
        for _, msgid in ipairs(mine) do
          local entries = redis.call('XRANGE', skey, msgid, msgid)
          if entries[1] then
            local fields = entries[1][2]
            local id = field(fields, FIELD.id) or ''
            local pending_entry = redis.call('XPENDING', skey, GROUP, msgid, msgid, 1)[1]
            own[#own + 1] = {prio, msgid, fields, pending_entry[4],
              redis.call('SISMEMBER', p .. KEY.abort, id)}
          else
            redis.call('XACK', skey, GROUP, msgid)
          end
        end
      end
    end
    cursors[#cursors + 1] = next_cursor
  end
  return {taken, own, cursors}
end

--[[ lease(KEYS[1]=prefix; ARGV: worker, then pairs priority, msgid)
Resets the idle time of the messages this worker still owns. Returns the msgids it no longer owns. ]]
local function lease(keys, args)
  local p = keys[1]
  local worker = args[1]
  local lost = {}
  local mine = {}
  for n = 2, #args, 2 do
    local prio, msgid = args[n], args[n + 1]
    if owns(stream_key(p, prio), msgid, worker) then
      mine[prio] = mine[prio] or {}
      table.insert(mine[prio], msgid)
    else
      lost[#lost + 1] = msgid
    end
  end
  for prio, ids in pairs(mine) do
    claim_ids(stream_key(p, prio), worker, 0, ids, true)
  end
  return lost
end

--[[ retire(KEYS[1]=prefix; ARGV: worker, now, priorities)
A worker stopping, after it recorded the outcome of every message it knew of: whatever is still in
its pending lists (delivered by a read whose reply it never got, or an outcome it could not record)
is handed back for immediate redelivery, unchanged, and the worker's consumers and heartbeat are
deleted. Returns the number of messages handed back. ]]
local function retire(keys, args)
  local p = keys[1]
  local worker, now = args[1], tonumber(args[2])
  local handed = 0
  for n = 3, #args do
    local prio = args[n]
    local skey = stream_key(p, prio)
    if redis.call('EXISTS', skey) == 1 then
      local ok, pending = pcall(redis.call, 'XPENDING', skey, GROUP, '-', '+', 1000, worker)
      if ok then
        for _, entry in ipairs(pending) do
          local msgid = entry[1]
          local entries = redis.call('XRANGE', skey, msgid, msgid)
          redis.call('XACK', skey, GROUP, msgid)
          redis.call('XDEL', skey, msgid)
          if entries[1] then
            local fields = entries[1][2]
            local id = field(fields, FIELD.id) or ''
            local st = load_state(p, id)
            if st and st[1] == STATE.queued and st[3] == msgid then
              redis.call('SREM', running_key(p, prio), id)
              if redis.call('SISMEMBER', p .. KEY.abort, id) == 1 then
                -- asked to abort while this worker held it: it ends here, as in finish
                redis.call('SREM', p .. KEY.abort, id)
                local published, worklist = {}, {}
                fail_task(p, id, fields, failure_payload('StreaqCancelled', 'task aborted'), now,
                  published, worklist)
                resolve_dependents(p, now, worklist, published)
                publish(p, published)
              else
                place(p, id, prio, fields, 0, now)
                handed = handed + 1
              end
            end
          end
        end
        if #pending < 1000 then pcall(redis.call, 'XGROUP', 'DELCONSUMER', skey, GROUP, worker) end
      end
    end
  end
  redis.call('HDEL', p .. KEY.workers, worker)
  return handed
end

-- the value of name in a flat [name, value, ...] reply
local function reply_field(reply, name)
  for n = 1, #reply, 2 do
    if reply[n] == name then return reply[n + 1] end
  end
  return nil
end

--[[ prune(KEYS[1]=prefix; ARGV: now, dead_after ms, forget_after ms, priorities)
Deletes the consumers of workers that are gone: no pending message, no read for dead_after, and
no heartbeat for dead_after. Forgets heartbeats older than forget_after (`streaq info` lists the
rest). Returns [consumers deleted, heartbeats forgotten]. ]]
local function prune(keys, args)
  local p = keys[1]
  local now, dead_after, forget_after = tonumber(args[1]), tonumber(args[2]), tonumber(args[3])
  local beats = {}
  local flat = redis.call('HGETALL', p .. KEY.workers)
  for n = 1, #flat, 2 do beats[flat[n]] = tonumber(flat[n + 1]) or 0 end
  local deleted, forgotten = 0, 0
  for n = 4, #args do
    local skey = stream_key(p, args[n])
    if redis.call('EXISTS', skey) == 1 then
      local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', skey, GROUP)
      if ok then
        for _, consumer in ipairs(consumers) do
          local name = reply_field(consumer, 'name')
          local beat = beats[name]
          if reply_field(consumer, 'pending') == 0
              and reply_field(consumer, 'idle') > dead_after
              and (beat == nil or now - beat > dead_after) then
            redis.call('XGROUP', 'DELCONSUMER', skey, GROUP, name)
            deleted = deleted + 1
          end
        end
      end
    end
  end
  for name, beat in pairs(beats) do
    if now - beat > forget_after then
      redis.call('HDEL', p .. KEY.workers, name)
      forgotten = forgotten + 1
    end
  end
  return {deleted, forgotten}
end

--[[ prepare(KEYS[1]=prefix; ARGV: priorities) creates the streams' consumer group. ]]
local function prepare(keys, args)
  local p = keys[1]
  for _, prio in ipairs(args) do
    local skey = stream_key(p, prio)
    local ok = pcall(redis.call, 'XGROUP', 'CREATE', skey, GROUP, '0', 'MKSTREAM')
    if not ok and redis.call('EXISTS', skey) == 0 then
      return redis.error_reply('STREAQ cannot create the consumer group of ' .. skey)
    end
  end
  return #args
end

--[[ counts(KEYS[1]=prefix; ARGV: priorities) -> [queued per priority..., delayed, waiting] ]]
local function counts(keys, args)
  local p = keys[1]
  local out = {}
  for _, prio in ipairs(args) do out[#out + 1] = redis.call('XLEN', stream_key(p, prio)) end
  out[#out + 1] = redis.call('ZCARD', p .. KEY.delayed)
  out[#out + 1] = redis.call('HLEN', tasks_key(p))
  return out
end

--[[ Dead letters. A message that can never succeed -- delivered more than max_tries times because
its worker keeps dying, an undecodable payload, an unknown function -- moves to the stream
  dlq   entries: the original fields plus reason, time (ms), priority, tries, worker
(capped at DLQ_MAXLEN entries, oldest dropped first) in the same call that writes its failed
result, so nothing vanishes and waiters still wake. ]]

local DLQ_MAXLEN = 10000

--[[ dead_letter(KEYS[1]=prefix; ARGV: worker, now, id, priority, msgid, record, ttl ms,
  unique fn or '', reason, tries)
Moves the claimed message msgid to the dead-letter stream, writes the failed result `record`
(waking waiters, failing dependents) and releases the task's unique lock.
Returns 1, or 0 when the worker does not own the message (any more): nothing is written. ]]
local function dead_letter(keys, args)
  local p = keys[1]
  local worker, now = args[1], tonumber(args[2])
  local id, prio, msgid, rec, ttl = args[3], args[4], args[5], args[6], args[7]
  local unique_fn, reason, tries = args[8], args[9], args[10]
  local skey = stream_key(p, prio)
  if not owns(skey, msgid, worker) then return 0 end
  local entries = redis.call('XRANGE', skey, msgid, msgid)
  if not entries[1] then
    redis.call('XACK', skey, GROUP, msgid)
    return 0
  end
  local dead = {}
  for _, v in ipairs(entries[1][2]) do dead[#dead + 1] = v end
  for _, v in ipairs({'reason', reason, 'time', args[2], 'priority', prio, 'tries', tries,
    'worker', worker}) do
    dead[#dead + 1] = v
  end
  redis.call('XADD', p .. KEY.dead_letters, 'MAXLEN', '~', DLQ_MAXLEN, '*', unpack(dead))
  redis.call('XACK', skey, GROUP, msgid)
  redis.call('XDEL', skey, msgid)
  local published, worklist = {}, {}
  store_result(p, id, rec, ttl, published)
  redis.call('HDEL', tasks_key(p), id)
  redis.call('SREM', p .. KEY.abort, id)
  redis.call('SREM', running_key(p, prio), id)
  if unique_fn ~= '' then release_unique(p, unique_fn, id) end
  if redis.call('SISMEMBER', p .. KEY.has_dependents, id) == 1 then
    local kind, payload = split_record(rec)
    worklist[1] = {id, kind, payload}
  end
  resolve_dependents(p, now, worklist, published)
  publish(p, published)
  return 1
end

-- the dead-letter entries naming one of ids (a set), or all of them when ids is nil
local function dead_entries(p, ids)
  local out = {}
  for _, entry in ipairs(redis.call('XRANGE', p .. KEY.dead_letters, '-', '+')) do
    if ids == nil or ids[field(entry[2], FIELD.id)] then out[#out + 1] = entry end
  end
  return out
end

local function id_set(args, from)
  if #args < from then return nil end
  local ids = {}
  for n = from, #args do ids[args[n]] = true end
  return ids
end

--[[ replay_dead_letters(KEYS[1]=prefix; ARGV: now, then groups of 4: dead-letter entry id,
  task id, priority, msgpack fields)
Puts dead-lettered tasks back in their streams as fresh tasks under their own ids, with the fields
the caller made of the dead letters (no tries so far, no last error, no expiry deadline; signed
afresh when signing is on); their failed result is deleted so that waiters wait for the new run.
An entry gone meanwhile (replayed or purged by someone else) is skipped, and a task that exists
again already (queued, delayed ...) is not placed twice; the entries are deleted. Dependents failed
when the task was dead-lettered stay failed. Returns the ids replayed. ]]
local function replay_dead_letters(keys, args)
  local p = keys[1]
  local now = tonumber(args[1])
  local replayed = {}
  for n = 2, #args, 4 do
    local entry, id, prio = args[n], args[n + 1], args[n + 2]
    if redis.call('XDEL', p .. KEY.dead_letters, entry) == 1
        and redis.call('HEXISTS', tasks_key(p), id) == 0 then
      redis.call('DEL', p .. KEY.result .. id)
      place(p, id, prio, cmsgpack.unpack(args[n + 3]), 0, now)
      replayed[#replayed + 1] = id
    end
  end
  return replayed
end

--[[ purge_dead_letters(KEYS[1]=prefix; ARGV: task ids (none: all)) -> entries deleted ]]
local function purge_dead_letters(keys, args)
  local p = keys[1]
  local ids = id_set(args, 1)
  if ids == nil then
    local n = redis.call('XLEN', p .. KEY.dead_letters)
    redis.call('DEL', p .. KEY.dead_letters)
    return n
  end
  local gone = 0
  for _, entry in ipairs(dead_entries(p, ids)) do
    gone = gone + redis.call('XDEL', p .. KEY.dead_letters, entry[1])
  end
  return gone
end

redis.register_function('__PREFIX__enqueue', enqueue)
redis.register_function('__PREFIX__finish', finish)
redis.register_function('__PREFIX__unique', unique)
redis.register_function('__PREFIX__abort', abort)
redis.register_function('__PREFIX__unschedule', unschedule)
redis.register_function{function_name = '__PREFIX__status', callback = status, flags = {'no-writes'}}
redis.register_function{function_name = '__PREFIX__info', callback = info, flags = {'no-writes'}}
redis.register_function('__PREFIX__promote', promote)
redis.register_function('__PREFIX__reclaim', reclaim)
redis.register_function('__PREFIX__lease', lease)
redis.register_function('__PREFIX__retire', retire)
redis.register_function('__PREFIX__prune', prune)
redis.register_function('__PREFIX__prepare', prepare)
redis.register_function{function_name = '__PREFIX__counts', callback = counts, flags = {'no-writes'}}
redis.register_function('__PREFIX__dead_letter', dead_letter)
redis.register_function('__PREFIX__replay_dead_letters', replay_dead_letters)
redis.register_function('__PREFIX__purge_dead_letters', purge_dead_letters)
