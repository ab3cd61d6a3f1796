-- Dedup (after tasks.lua): what a task enqueued with a dedup key does when its key is taken.
--[[
A dedup key belongs to a function and a mode; its name is <mode>:<length of fn>:<fn>:<key>.
  dd:<name>  msgpack {m = mode, h = the key's task (its holder), u = throttled until (ms),
             f = keep-last follow-up}, with a TTL (below)
  ddi        hash id -> name, for every live task that holds or follows a key; the calls that
             end a task (finish, fail_task, dead_letter) look here to free the key (dedup_ended)
A holder counts only while it is live: in the index and still named by ddi under this key (a
finished id may be given to a new task), so a record whose task vanished never blocks a key.

Modes (enqueue decides, in the same call that places the task):
  throttle   the key's task is live, or u is not reached: the new task is dropped, the answer
             names the holder. Else it is placed and holds the key until it ends and u passes
             (u = now + window). Failing, aborted or dead-lettered, it frees the key at once.
  debounce   the new task is placed to start at now + window (or later, if it was delayed) and
             holds the key; the holder that has not started yet is superseded.
  keep_last  the holder started: the new task waits (state waiting, without dependencies) as the
             key's one follow-up, superseding the previous follow-up; when the holder ends the
             follow-up is placed and holds the key. The holder has not started (or is gone): it
             is superseded and the new task is placed as any task.
A task has *started* once a worker claimed its message (running or prefetched): a claimed task is
never replaced, so whatever a worker holds runs with the arguments it read. A superseded task
leaves wherever it waits and ends with a StreaqCancelled result naming its successor (waiters wake,
dependents fail): no task vanishes silently.

TTLs: a record lives DEDUP_LIVE_TTL longer than its window or its task's start time, renewed with
every enqueue of the key; once its holder ended it lives only as long as a throttle window runs.
The TTL frees keys that nothing would free otherwise -- the liveness check above already keeps a
record of a vanished task from blocking.
]]

local DEDUP_LIVE_TTL = 86400000

local function dedup_key(p, name) return p .. KEY.dedup .. name end

local function dedup_load(p, name)
  local raw = redis.call('GET', dedup_key(p, name))
  if not raw then return nil end
  local ok, rec = pcall(cmsgpack.unpack, raw)
  if not ok or type(rec) ~= 'table' then return nil end
  return rec
end

local function dedup_save(p, name, rec, ttl)
  redis.call('SET', dedup_key(p, name), cmsgpack.pack(rec), 'PX', math.max(math.floor(ttl), 1))
end

-- the index entry of id while it is live and holds (or follows) the key name, else nil
local function dedup_live(p, name, id)
  if not id or redis.call('HGET', p .. KEY.dedup_index, id) ~= name then return nil end
  return load_state(p, id)
end

-- whether a worker claimed the task (index entry st): it is running, or about to
local function claimed(p, st)
  return st[1] == STATE.queued and is_pending(p, st[2], st[3])
end

-- end the live task old (index entry st), which has not started, in favour of new
local function supersede(p, old, st, new, now, published, worklist)
  redis.call('HDEL', p .. KEY.dedup_index, old)
  local fields = unlink(p, old, st, now)
  if fields then
    fail_task(p, old, fields, failure_payload('StreaqCancelled',
      'superseded by task ' .. new .. ' (dedup)'), now, published, worklist, st[2],
      EVENT.aborted)
  else
    redis.call('HDEL', tasks_key(p), old)
  end
end

-- enqueue the task id with the dedup spec {key, mode, window ms}; returns {DEDUPED.*, other id}
dedup_enqueue = function(p, id, prio, fields, run_at, spec, now, published, worklist)
  local mode, window = spec[2], tonumber(spec[3])
  local name = mode .. ':' .. #field(fields, FIELD.fn) .. ':' .. field(fields, FIELD.fn) .. ':'
    .. spec[1]
  local rec = dedup_load(p, name) or {}
  local holder = rec.h
  local held = dedup_live(p, name, holder)
  local index = p .. KEY.dedup_index
  if mode == DEDUP.throttle then
    if held or (holder and (rec.u or 0) > now) then return {DEDUPED.dropped, holder} end
    place(p, id, prio, fields, run_at, now)
    redis.call('HSET', index, id, name)
    dedup_save(p, name, {m = mode, h = id, u = now + window},
      math.max(window, run_at - now) + DEDUP_LIVE_TTL)
    return {DEDUPED.enqueued, ''}
  elseif mode == DEDUP.debounce then
    local answer = {DEDUPED.enqueued, ''}
    if held and not claimed(p, held) then
      supersede(p, holder, held, id, now, published, worklist)
      answer = {DEDUPED.replaced, holder}
    end
    local at = math.max(run_at, now + window)
    place(p, id, prio, fields, at, now)
    redis.call('HSET', index, id, name)
    dedup_save(p, name, {m = mode, h = id}, at - now + DEDUP_LIVE_TTL)
    return answer
  end
  -- keep last
  local follow = rec.f
  local waiting = dedup_live(p, name, follow)
  local answer = {DEDUPED.enqueued, ''}
  if waiting then
    supersede(p, follow, waiting, id, now, published, worklist)
    answer = {DEDUPED.replaced, follow}
  end
  redis.call('HSET', index, id, name)
  if held and claimed(p, held) then
    if not waiting then answer = {DEDUPED.follows, holder} end
    redis.call('HSET', tasks_key(p), id, cmsgpack.pack({STATE.waiting, prio, fields, run_at}))
    dedup_save(p, name, {m = mode, h = holder, f = id},
      math.max(run_at - now, 0) + DEDUP_LIVE_TTL)
    return answer
  end
  if held then
    -- not started (queued, delayed, or back for a retry): the new task takes its place
    supersede(p, holder, held, id, now, published, worklist)
    if not waiting then answer = {DEDUPED.replaced, holder} end
  end
  place(p, id, prio, fields, run_at, now)
  dedup_save(p, name, {m = mode, h = id}, math.max(run_at - now, 0) + DEDUP_LIVE_TTL)
  return answer
end

-- the task id ended (failed: it did not succeed); frees its dedup key, or hands the key on to
-- its keep-last follow-up
dedup_ended = function(p, id, now, failed)
  local index = p .. KEY.dedup_index
  local name = redis.call('HGET', index, id)
  if not name then return end
  redis.call('HDEL', index, id)
  local rec = dedup_load(p, name)
  if not rec then return end
  if rec.f == id then
    -- a follow-up aborted while it waited
    rec.f = nil
    redis.call('SET', dedup_key(p, name), cmsgpack.pack(rec), 'KEEPTTL')
    return
  end
  if rec.h ~= id then return end
  if rec.m == DEDUP.throttle and not failed and (rec.u or 0) > now then
    -- the key stays throttled until its window ends; its handle still names this task
    dedup_save(p, name, rec, rec.u - now)
    return
  end
  local st = rec.m == DEDUP.keep_last and dedup_live(p, name, rec.f)
  if st and st[1] == STATE.waiting then
    local follow = rec.f
    dedup_save(p, name, {m = rec.m, h = follow}, math.max((st[4] or 0) - now, 0) + DEDUP_LIVE_TTL)
    place(p, follow, st[2], st[3], st[4] or 0, now)
    return
  end
  redis.call('DEL', dedup_key(p, name))
end
