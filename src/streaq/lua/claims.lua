-- Claims: reclaiming, leases, retiring and pruning of workers (after base.lua).

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
is handed back for immediate redelivery, unchanged, and the worker's consumers, heartbeat and
self-report (wi:) are deleted. Returns the number of messages handed back. ]]
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
              release_admission(p, id, now)
              if redis.call('SISMEMBER', p .. KEY.abort, id) == 1 then
                -- asked to abort while this worker held it: it ends here, as in finish
                redis.call('SREM', p .. KEY.abort, id)
                local published, worklist = {}, {}
                fail_task(p, id, fields, failure_payload('StreaqCancelled', 'task aborted'), now,
                  published, worklist, prio, EVENT.aborted)
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
  redis.call('DEL', p .. KEY.worker_info .. worker)
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

register('reclaim', reclaim)
register('lease', lease)
register('retire', retire)
register('prune', prune)
