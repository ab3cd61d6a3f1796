-- Progress of running tasks (after base.lua; the events themselves are written by the calls that
-- make each transition, with emit in base.lua).

-- how long the progress of a running task is kept after its last report (ms): a task that ends
-- keeps it as long as its result (end_progress), so this bounds only one whose worker vanished
local PROGRESS_RUNNING_TTL = 24 * 3600 * 1000

--[[ progress(KEYS[1]=prefix; ARGV: worker, id, priority, msgid, fn, tries, start, now, value)
Records value (encoded by the caller) as the latest progress of the task id and emits a progress
event, while the worker owns the task's message. A start time other than 0 marks the task started
first, as finish does: the started event is written by whichever mark comes first, so that it
comes before the progress. Returns 1, or 0 when the worker does not own the message (the task ended, or another
worker took it over): nothing is written, so no progress follows a task's last event. ]]
local function progress(keys, args)
  local p = keys[1]
  local worker, id, prio, msgid, fn = args[1], args[2], args[3], args[4], args[5]
  local tries, start, now, value = tonumber(args[6]), tonumber(args[7]), tonumber(args[8]), args[9]
  if not owns(stream_key(p, prio), msgid, worker) then return 0 end
  if start > 0 and redis.call('SADD', running_key(p, prio), id) == 1 then
    emit(p, EVENT.started, id, fn, start, tries)
  end
  redis.call('SET', p .. KEY.progress .. id, value, 'PX', PROGRESS_RUNNING_TTL)
  redis.call('SADD', p .. KEY.progressed, id)
  emit(p, EVENT.progress, id, fn, now, tries, value)
  return 1
end

register('progress', progress)
