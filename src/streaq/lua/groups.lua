-- Groups: fan-in of many tasks into one (after base.lua).

--[[ A group is a task that never runs. Its index entry waits (state w, link g) on its members
through the dependency sets of base.lua, and it ends in the very call that ends its last member.
Its member ids, in member order, are in gm:<group> (written by enqueue); the records of the
members that ended are in gr:<group>. One member's end costs O(1) (an HSET, an SREM, an SCARD; the
group's index entry is not rewritten); the group's end reads them all once.

A group's result record has kind KIND.results and the payload
  {first failed member id (member order) or nil, {{member id, member record}, ...}}
What a task linked to a group gets (group_effect): a `then` link (settled) the results, whatever
they are; an `all` link the members' values (KIND.values, same payload) when none failed, else it
fails naming the first failed member; an `otherwise` fallback runs when a member failed, else it
ends with the values. ]]

-- members read or written per command (unpack has a limit)
local GROUP_STEP = 1000

-- the first failed member a group's payload names, or nil
local function first_failure(payload)
  if string.byte(payload, 2) == 0xc0 then return nil end
  return cmsgpack.unpack(string.sub(payload, 2, 1 + scalar_len(payload, 2)))
end

group_effect = function(group, kind, payload, link)
  if kind ~= KIND.results or link == LINK['then'] then return kind, nil end
  local failed = first_failure(payload)
  if failed then return KIND.error, 'member ' .. failed .. ' of group ' .. group .. ' failed' end
  return KIND.values, nil
end

-- record the member order of the group id (enqueue)
local function group_enqueue(p, id, members)
  local order = p .. KEY.group_members .. id
  redis.call('DEL', order, p .. KEY.group_results .. id)
  for start = 1, #members, GROUP_STEP do
    redis.call('RPUSH', order, unpack(members, start, math.min(start + GROUP_STEP - 1, #members)))
  end
end

complete_group = function(p, id, fields, now, published, worklist)
  local order, results = p .. KEY.group_members .. id, p .. KEY.group_results .. id
  local n = redis.call('LLEN', order)
  local parts, failed = {}, nil
  for start = 0, n - 1, GROUP_STEP do
    local ids = redis.call('LRANGE', order, start, start + GROUP_STEP - 1)
    local recs = redis.call('HMGET', results, unpack(ids))
    for m, member in ipairs(ids) do
      local rec = recs[m]
      if not rec then
        -- cannot happen while every end of a member reaches its group; said, not hidden
        rec = '\153' .. cmsgpack.pack('', 0, now, KIND.error, 0, now, 0, '') ..
          failure_payload('StreaqError', 'the result of member ' .. member .. ' is lost')
      end
      if not failed and split_record(rec) == KIND.error then failed = member end
      parts[#parts + 1] = '\146' .. cmsgpack.pack(member) .. rec
    end
  end
  local payload = '\146' .. (failed and cmsgpack.pack(failed) or '\192') .. array_head(n) ..
    table.concat(parts)
  local created = tonumber(field(fields, FIELD.created))
  local rec = '\153' .. cmsgpack.pack(field(fields, FIELD.fn), created, created, KIND.results,
    created, now, 0, '') .. payload
  store_result(p, id, rec, field(fields, FIELD.ttl), published)
  redis.call('HDEL', tasks_key(p), id)
  redis.call('DEL', order, results, p .. KEY.dependencies .. id)
  worklist[#worklist + 1] = {id, KIND.results, payload, rec}
end

group_member_done = function(p, id, st, member, rec, now, published, worklist)
  redis.call('HSET', p .. KEY.group_results .. id, member, rec)
  local dp = p .. KEY.dependencies .. id
  redis.call('SREM', dp, member)
  if redis.call('SCARD', dp) == 0 then complete_group(p, id, st[3], now, published, worklist) end
end
