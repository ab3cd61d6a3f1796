-- Tasks: enqueue, finish, abort, status and scheduling (after base.lua).

--[[ enqueue(KEYS[1]=prefix; ARGV: now, then one msgpack blob per task:
  [id, priority, run_at, dependencies, origin, fields, dedup])
origin says where the id comes from: ID_GIVEN (the caller chose it), ID_FIRING (a cron firing:
skipped when a task or result of that id exists) or ID_FRESH (a random id made by the producer,
which no other task can hold: nothing to check). dedup is absent, or {key, mode, window ms} for a
task with a dedup key (dedup.lua; such a task has no dependencies).
Returns one answer per task: 1 enqueued, 0 skipped (id exists), 2 failed at once (dependency
failed); for a task with a dedup key {DEDUPED.*, the other task's id or ''}.
Errors (nothing written) on an unknown dependency, on a task after its own id, on a given id
that a live task (one in the index) holds, and on an id the batch holds twice: a live task is
never overwritten. A finished task's id may be given again: its old result is deleted, so that
waiters wait for the new run. ]]
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
    if t[7] and #t[4] > 0 then
      return redis.error_reply('STREAQ task ' .. id .. ' has a dedup key and dependencies')
    end
    for _, dep in ipairs(t[4]) do
      -- a task after its own id: a live one is refused above; a finished one's result is
      -- deleted below, before the dependency would be read, so its failure would go unseen
      if dep == id then
        return redis.error_reply('STREAQ task ' .. id .. ' cannot run after its own id')
      end
      if not batch_ids[dep] and redis.call('HEXISTS', tasks_key(p), dep) == 0
          and redis.call('EXISTS', p .. KEY.result .. dep) == 0 then
        return redis.error_reply('STREAQ unknown dependency ' .. dep .. ' of task ' .. t[1])
      end
    end
    batch_ids[t[1]] = true
  end
  local out = {}
  local published = {}
  local superseded = {}
  local pending_ids, pending_vals = {}, {}
  for n, t in ipairs(tasks) do
    local id, prio, run_at, deps, origin, fields = t[1], t[2], tonumber(t[3]), t[4], t[5], t[6]
    local skip = false
    if origin == ID_FIRING then
      skip = redis.call('HEXISTS', tasks_key(p), id) == 1
        or redis.call('EXISTS', p .. KEY.result .. id) == 1
    elseif origin == ID_GIVEN then
      redis.call('DEL', p .. KEY.result .. id, p .. KEY.failed_call .. id,
        p .. KEY.progress .. id)
    end
    if skip then
      out[n] = 0
    elseif t[7] then
      -- placed (and indexed) at once: a later task of this batch may find it holding its key
      out[n] = dedup_enqueue(p, id, prio, fields, run_at, t[7], now, published, superseded)
      if out[n][1] ~= DEDUPED.dropped then emit_for(p, EVENT.enqueued, id, fields, now) end
    elseif #deps == 0 then
      out[n] = 1
      emit_for(p, EVENT.enqueued, id, fields, now)
      if run_at > now or is_gated(p, field(fields, FIELD.fn)) then
        place(p, id, prio, fields, run_at, now)
      else
        local msgid = redis.call('XADD', stream_key(p, prio), '*', unpack(fields))
        pending_ids[#pending_ids + 1] = id
        pending_vals[#pending_vals + 1] = cmsgpack.pack({STATE.queued, prio, msgid})
      end
    else
      out[n] = 1
      emit_for(p, EVENT.enqueued, id, fields, now)
      -- index the earlier tasks of this batch first: they may be this task's dependencies
      if #pending_ids > 0 then
        local flat = {}
        for m = 1, #pending_ids do flat[#flat + 1] = pending_ids[m]; flat[#flat + 1] = pending_vals[m] end
        redis.call('HSET', tasks_key(p), unpack(flat))
        pending_ids, pending_vals = {}, {}
      end
      local waiting = 0
      local failed_dep, failed_why = nil, nil
      local link = field(fields, FIELD.link)
      if link == LINK.group then group_enqueue(p, id, deps) end
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
          if rec and link == LINK.group then
            redis.call('HSET', p .. KEY.group_results .. id, dep, rec)
          elseif rec then
            local kind, payload = split_record(rec)
            local why
            kind, why = group_effect(dep, kind, payload, link)
            if kind == KIND.error and link ~= LINK.otherwise then
              failed_dep, failed_why = dep, why
            elseif link == LINK['then'] or link == LINK.all then
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
          failed_why or ('dependency ' .. failed_dep .. ' failed')), now, published, {}, prio, EVENT.failed)
      elseif waiting > 0 then
        redis.call('HSET', tasks_key(p), id, cmsgpack.pack({STATE.waiting, prio, fields, run_at}))
      elseif link == LINK.group then
        complete_group(p, id, fields, now, published, superseded)
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
  resolve_dependents(p, now, superseded, published)
  publish(p, published)
  return out
end

--[[ finish(KEYS[1]=prefix; ARGV: worker, now, n, then n groups of 5 of the tasks the worker
started: priority, id, function name, tries, start time (ms), then groups of 7: id, priority,
msgid, outcome, a, b, c
outcome 'r' (result): a = record, b = ttl ms (-1 keep, 0 publish only)
outcome 'c' (result of a repeating task, which runs again): a = record,
                      b = msgpack [ttl ms, next run_at, fields]
outcome 'y' (retry):  a = msgpack fields, b = run_at
outcome 'h' (hand back for immediate redelivery): a = msgpack fields, b unused
c = the function's name when it is unique (its lock is released if this task holds it), else ''.
A started task joins its stream's running set and gets a started event, once (a mark sent again
is a no-op); a task whose outcome is in the same call gets its started event with the outcome,
only if that is applied. Outcomes emit finished, failed or aborted (a result), retried, or
aborted (cancelled); a hand-back emits nothing.
An outcome is applied only while the worker owns the message (see Ownership): otherwise the group
is skipped, which makes a repeated call a no-op. A task asked to abort (in `ab`) is not retried,
handed back or repeated: it ends with a StreaqCancelled result instead (or the result it reached).
Returns [results written, finished tasks whose dependents were released or failed, groups
skipped]. ]]
local function finish(keys, args)
  local p = keys[1]
  local worker, now = args[1], tonumber(args[2])
  local marks = tonumber(args[3])
  local first = 4 + 5 * marks
  local with_outcome, started_at = {}, {}
  if marks > 0 then
    for n = first, #args, 7 do with_outcome[args[n]] = true end
  end
  for n = 4, first - 1, 5 do
    local id = args[n + 1]
    if with_outcome[id] then
      started_at[id] = n
    elseif redis.call('SADD', running_key(p, args[n]), id) == 1 then
      emit(p, EVENT.started, id, args[n + 2], tonumber(args[n + 4]), tonumber(args[n + 3]))
    end
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
  local items = {}
  for n = first, #args, 7 do
    local id, prio, msgid = args[n], args[n + 1], args[n + 2]
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
      items[#items + 1] = n
    end
  end
  -- the slots of admitted (gated) tasks that end free up first: a retry or hand-back placed
  -- below is gated anew, and must not find its own old admission counted
  if #items > 0 and redis.call('EXISTS', p .. KEY.admitted) == 1 then
    local ids = {}
    for _, n in ipairs(items) do ids[#ids + 1] = args[n] end
    for m, value in ipairs(redis.call('HMGET', p .. KEY.admitted, unpack(ids))) do
      if value then release_admission(p, ids[m], now) end
    end
  end
  for _, n in ipairs(items) do
    local id, prio, outcome = args[n], args[n + 1], args[n + 3]
    local a, b, c = args[n + 4], args[n + 5], args[n + 6]
    local mark = started_at[id]
    if mark then
      emit(p, EVENT.started, id, args[mark + 2], tonumber(args[mark + 4]),
        tonumber(args[mark + 3]))
    end
    if outcome ~= OUTCOME.result and redis.call('SISMEMBER', p .. KEY.abort, id) == 1 then
      if outcome == OUTCOME['repeat'] then
        b = cmsgpack.unpack(b)[1]
        outcome = OUTCOME.result
      else
        cancelled[#cancelled + 1] = {id, cmsgpack.unpack(a), prio}
        outcome = OUTCOME.cancelled
      end
    end
    if outcome == OUTCOME.result then
      store_result(p, id, a, b, published)
      emit_result(p, id, a, now)
      -- pcall: a record this library cannot read must not stop the outcome from being applied
      local read, kind = pcall(split_record, a)
      if read and kind == KIND.error then
        -- a failure keeps its call, read from its entry before the entry is deleted below
        local entries = redis.call('XRANGE', stream_key(p, prio), args[n + 2], args[n + 2])
        if entries[1] then keep_call(p, id, prio, entries[1][2], b) end
      end
      done_ids[#done_ids + 1] = id
      done_records[id] = a
      written = written + 1
    elseif outcome == OUTCOME['repeat'] then
      local spec = cmsgpack.unpack(b)
      store_result(p, id, a, spec[1], published)
      emit_result(p, id, a, now)
      done_ids[#done_ids + 1] = id
      done_records[id] = a
      repeats[#repeats + 1] = {id, prio, spec[3], tonumber(spec[2])}
      written = written + 1
    elseif outcome == OUTCOME.retry then
      local fields = cmsgpack.unpack(a)
      emit_for(p, EVENT.retried, id, fields, now)
      place(p, id, prio, fields, tonumber(b), now)
    elseif outcome == OUTCOME.hand_back then
      place(p, id, prio, cmsgpack.unpack(a), 0, now)
    end
    if c ~= '' then release_unique(p, c, id) end
  end
  for prio, owned in pairs(acks) do
    local skey = stream_key(p, prio)
    redis.call('XACK', skey, GROUP, unpack(owned.ids))
    redis.call('XDEL', skey, unpack(owned.ids))
    redis.call('SREM', running_key(p, prio), unpack(owned.tasks))
  end
  if #done_ids > 0 then
    if redis.call('EXISTS', p .. KEY.dedup_index) == 1 then
      for _, id in ipairs(done_ids) do
        local kind = split_record(done_records[id])
        dedup_ended(p, id, now, kind == KIND.error)
      end
    end
    redis.call('HDEL', tasks_key(p), unpack(done_ids))
    redis.call('SREM', p .. KEY.abort, unpack(done_ids))
    local parents = redis.call('SMISMEMBER', p .. KEY.has_dependents, unpack(done_ids))
    for m, flag in ipairs(parents) do
      if flag == 1 then
        released = released + 1
        local id = done_ids[m]
        local kind, payload = split_record(done_records[id])
        worklist[#worklist + 1] = {id, kind, payload, done_records[id]}
      end
    end
  end
  for _, item in ipairs(cancelled) do
    released = released + redis.call('SISMEMBER', p .. KEY.has_dependents, item[1])
    redis.call('SREM', p .. KEY.abort, item[1])
    fail_task(p, item[1], item[2], failure_payload('StreaqCancelled', 'task aborted'), now,
      published, worklist, item[3], EVENT.aborted)
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
local function unlink(p, id, st, now)
  local state, prio = st[1], st[2]
  if state == STATE.queued then
    local entries = redis.call('XRANGE', stream_key(p, prio), st[3], st[3])
    redis.call('XDEL', stream_key(p, prio), st[3])
    release_admission(p, id, now)
    if entries[1] then return entries[1][2] end
    return nil
  elseif state == STATE.gated then
    leave_gate(p, id, st[3])
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
-- (abort requested), -1 gone; message is its failed result's ('task aborted' by default)
local function abort_task(p, id, st, now, message)
  if st[1] == STATE.queued and is_pending(p, st[2], st[3]) then
    redis.call('SADD', p .. KEY.abort, id)
    -- a repeating task's previous result must not answer those waiting for this run's end
    redis.call('DEL', p .. KEY.result .. id)
    redis.call('PUBLISH', p .. KEY.abort_channel, id)
    return 2
  end
  local fields = unlink(p, id, st, now)
  if not fields then return -1 end
  local published, worklist = {}, {}
  fail_task(p, id, fields, failure_payload('StreaqCancelled', message or 'task aborted'), now,
    published, worklist, st[2], EVENT.aborted)
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

--[[ purge(KEYS[1]=prefix; ARGV: now, cursor, count) -> [next cursor, tasks removed]
Ends every task of one HSCAN step of the index (about count ids) that no worker holds: queued but
unclaimed, waiting at a gate, delayed, or waiting for dependencies. Each ends as an abort does,
with a StreaqCancelled result ('task purged') that wakes its waiters and fails its dependents;
claimed tasks (running or prefetched) are left alone. The caller repeats until the cursor is '0';
a step is bounded so that a large queue never blocks the server for long. ]]
local function purge(keys, args)
  local p = keys[1]
  local now, cursor, count = tonumber(args[1]), args[2], tonumber(args[3])
  local before = redis.call('HLEN', tasks_key(p))
  local step = redis.call('HSCAN', tasks_key(p), cursor, 'COUNT', count)
  local found = step[2]
  for n = 1, #found, 2 do
    local id = found[n]
    -- a dependent failed earlier in this step is gone from the index already
    local st = load_state(p, id)
    if st and not (st[1] == STATE.queued and is_pending(p, st[2], st[3])) then
      abort_task(p, id, st, now, 'task purged')
    end
  end
  -- dependents failed on the way count too: everything that left the index in this call
  return {step[1], before - redis.call('HLEN', tasks_key(p))}
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
  elseif st[1] == STATE.gated then
    return 'queued'
  end
  return 'scheduled'
end

--[[ info(KEYS[1]=prefix; ARGV: id) -> nil | [status, priority, fields, run_at, deps, dependents,
  delivery count, latest progress or nil] ]]
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
    redis.call('SMEMBERS', p .. KEY.dependents .. id), deliveries,
    redis.call('GET', p .. KEY.progress .. id)}
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
  local nxt = fire_timers(p, now) or -1
  local first = redis.call('ZRANGE', p .. KEY.delayed, 0, 0, 'WITHSCORES')
  if first[2] and (nxt < 0 or tonumber(first[2]) < nxt) then nxt = tonumber(first[2]) end
  return {#due, nxt}
end

--[[ prepare(KEYS[1]=prefix; ARGV: now, n, n priorities, then pairs fn, msgpack flow
configuration ('' for a function without limits))
Creates the streams' consumer group and writes the flow configuration of the functions a worker
registered (keeping their pause; see flow.lua). ]]
local function prepare(keys, args)
  local p = keys[1]
  local now, n = tonumber(args[1]), tonumber(args[2])
  for m = 3, 2 + n do
    local skey = stream_key(p, args[m])
    local ok = pcall(redis.call, 'XGROUP', 'CREATE', skey, GROUP, '0', 'MKSTREAM')
    if not ok and redis.call('EXISTS', skey) == 0 then
      return redis.error_reply('STREAQ cannot create the consumer group of ' .. skey)
    end
  end
  for m = 3 + n, #args, 2 do
    local cfg = args[m + 1] ~= '' and cmsgpack.unpack(args[m + 1]) or nil
    configure(p, args[m], cfg, now)
  end
  return n
end

--[[ counts(KEYS[1]=prefix; ARGV: priorities) -> [queued per priority..., delayed, all unfinished,
  waiting at gates] ]]
local function counts(keys, args)
  local p = keys[1]
  local out = {}
  for _, prio in ipairs(args) do out[#out + 1] = redis.call('XLEN', stream_key(p, prio)) end
  out[#out + 1] = redis.call('ZCARD', p .. KEY.delayed)
  out[#out + 1] = redis.call('HLEN', tasks_key(p))
  out[#out + 1] = tonumber(redis.call('GET', p .. KEY.gated_total) or '0')
  return out
end

--[[ kept_call(KEYS[1]=prefix; ARGV: id) -> nil | [priority, fields]
The call kept with the failed result of id (see keep_call): its priority and stream fields. ]]
local function kept_call(keys, args)
  local raw = redis.call('GET', keys[1] .. KEY.failed_call .. args[1])
  if not raw then return nil end
  return cmsgpack.unpack(raw)
end

--[[ retry_failed(KEYS[1]=prefix; ARGV: id, now, priority, msgpack fields)
Queues the failed task id again under its id, with the fields the caller made of its kept call
(no tries so far, no last error, no expiry deadline; signed afresh when signing is on). Its failed
result and kept call are deleted, so that waiters wait for the new run; dependents failed with it
stay failed. Returns 1 queued, 0 nothing kept (not failed, expired, retried or deleted already),
-1 a live task holds the id. ]]
local function retry_failed(keys, args)
  local p = keys[1]
  local id, now, prio = args[1], tonumber(args[2]), args[3]
  if redis.call('HEXISTS', tasks_key(p), id) == 1 then return -1 end
  if redis.call('EXISTS', p .. KEY.failed_call .. id) == 0 then return 0 end
  redis.call('DEL', p .. KEY.result .. id, p .. KEY.failed_call .. id, p .. KEY.progress .. id)
  local fields = cmsgpack.unpack(args[4])
  emit_for(p, EVENT.enqueued, id, fields, now)
  place(p, id, prio, fields, 0, now)
  return 1
end

--[[ delete_result(KEYS[1]=prefix; ARGV: id)
Deletes the stored result of the finished task id and its kept call. A task that is live again
(a repeating task between runs, a retry) keeps its result. Returns 1 deleted, 0 nothing to delete,
-1 a live task holds the id. ]]
local function delete_result(keys, args)
  local p = keys[1]
  local id = args[1]
  if redis.call('HEXISTS', tasks_key(p), id) == 1 then return -1 end
  local gone = redis.call('DEL', p .. KEY.result .. id)
  redis.call('DEL', p .. KEY.failed_call .. id, p .. KEY.progress .. id)
  return gone
end

register('enqueue', enqueue)
register('kept_call', kept_call, true)
register('retry_failed', retry_failed)
register('delete_result', delete_result)
register('finish', finish)
register('unique', unique)
register('abort', abort)
register('unschedule', unschedule)
register('purge', purge)
register('status', status, true)
register('info', info, true)
register('promote', promote)
register('prepare', prepare)
register('counts', counts, true)
