-- Dead letters (after base.lua).

--[[ Dead letters. A message that can never succeed -- delivered more than max_tries times because
its worker keeps dying, an undecodable payload, an unknown function -- moves to the stream
  dlq   entries: the original fields plus reason, time (ms), priority, tries, worker
(capped at DLQ_MAXLEN entries, oldest dropped first) in the same call that writes its failed
result, so nothing vanishes and waiters still wake. ]]

local DLQ_MAXLEN = 10000

--[[ dead_letter(KEYS[1]=prefix; ARGV: worker, now, id, priority, msgid, record, ttl ms,
  unique fn or '', reason, tries)
Moves the claimed message msgid to the dead-letter stream, writes the failed result `record`
(waking waiters, failing dependents) and releases the task's unique lock and dedup key.
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
  emit(p, EVENT.dead_lettered, id, field(entries[1][2], FIELD.fn), now, tonumber(tries))
  store_result(p, id, rec, ttl, published)
  keep_call(p, id, prio, entries[1][2], ttl)
  redis.call('HDEL', tasks_key(p), id)
  redis.call('SREM', p .. KEY.abort, id)
  redis.call('SREM', running_key(p, prio), id)
  if unique_fn ~= '' then release_unique(p, unique_fn, id) end
  release_admission(p, id, now)
  dedup_ended(p, id, now, true)
  if redis.call('SISMEMBER', p .. KEY.has_dependents, id) == 1 then
    local kind, payload = split_record(rec)
    worklist[1] = {id, kind, payload, rec}
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
      redis.call('DEL', p .. KEY.result .. id, p .. KEY.failed_call .. id,
        p .. KEY.progress .. id)
      local fields = cmsgpack.unpack(args[n + 3])
      emit_for(p, EVENT.enqueued, id, fields, now)
      place(p, id, prio, fields, 0, now)
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

register('dead_letter', dead_letter)
register('replay_dead_letters', replay_dead_letters)
register('purge_dead_letters', purge_dead_letters)
