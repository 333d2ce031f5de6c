//! The Lua scripts the cluster runs in Redis, each one atomic step on a room's keys (an append,
//! a load, a catch-up, a checkpoint, a private room's creation and moderation, a room's deletion,
//! presence, retention). They must never touch another room's keys: every key a script names has
//! the room's hash tag (but for the set of rooms).

/// Appends an operation: its number, its place in the stream, its publication.
/// KEYS: meta, ops. ARGV: sender, json, channel.
pub(super) const APPEND: &str = r"
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('XADD', KEYS[2], '0-' .. seq, 'o', ARGV[2], 'f', ARGV[1])
redis.call('PUBLISH', ARGV[3], 'o:' .. seq .. ':' .. ARGV[1] .. ':' .. ARGV[2])
return seq
";

/// Reads a room: its checkpoint and the operations after it, in one atomic step (a checkpoint
/// stored between two reads would trim operations the first read did not cover). Creates the
/// room's entry in the room set unless `max_rooms` are stored (then answers `too_many`). A room
/// opened (not only read) records when, in `opened` (ms), for retention.
/// KEYS: meta, ops, rooms. ARGV: room, max_rooms (0: read only, never create).
pub(super) const LOAD: &str = r"
local existed = redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1
if not existed then
  if tonumber(ARGV[2]) == 0 then return {'missing'} end
  if redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[2]) then return {'too_many'} end
  redis.call('SADD', KEYS[3], ARGV[1])
end
if tonumber(ARGV[2]) > 0 then
  local t = redis.call('TIME')
  redis.call('HSET', KEYS[1], 'opened', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end
local m = redis.call('HMGET', KEYS[1], 'cp_seq', 'png', 'seq')
local cp = tonumber(m[1] or '0')
local ops = redis.call('XRANGE', KEYS[2], '0-' .. (cp + 1), '+')
return {existed and 'existed' or 'created', tostring(cp), m[2] or '', m[3] or '0', ops}
";

/// The operations after `last`, or why there is no such list: a checkpoint already covers some
/// of them (`behind`), or Redis has fewer operations than the node (`ahead`: Redis lost some).
/// KEYS: meta, ops. ARGV: last.
pub(super) const AFTER: &str = r"
local m = redis.call('HMGET', KEYS[1], 'cp_seq', 'seq')
local cp, head, last = tonumber(m[1] or '0'), tonumber(m[2] or '0'), tonumber(ARGV[1])
if head < last then return {'ahead', tostring(head)} end
if cp > last then return {'behind', tostring(cp)} end
return {'ops', tostring(head), redis.call('XRANGE', KEYS[2], '0-' .. (last + 1), '+')}
";

/// Stores a checkpoint unless another node holds the lease or a newer one is stored, trims the
/// operations it covers and tells the room's nodes. KEYS: meta, ops, lease.
/// ARGV: seq, png (empty: blank), node, channel.
pub(super) const CHECKPOINT: &str = r"
local holder = redis.call('GET', KEYS[3])
if holder and holder ~= ARGV[3] then return 0 end
local seq = tonumber(ARGV[1])
if seq <= tonumber(redis.call('HGET', KEYS[1], 'cp_seq') or '0') then
  redis.call('DEL', KEYS[3])
  return 0
end
redis.call('HSET', KEYS[1], 'cp_seq', ARGV[1])
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'cp_at', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
if ARGV[2] == '' then redis.call('HDEL', KEYS[1], 'png') else redis.call('HSET', KEYS[1], 'png', ARGV[2]) end
redis.call('XTRIM', KEYS[2], 'MINID', '0-' .. (seq + 1))
redis.call('DEL', KEYS[3])
redis.call('PUBLISH', ARGV[4], 'k:' .. ARGV[1])
return 1
";

/// Creates a private room: its token digests, and its entry in the room set, unless a room of
/// that name exists (answers 0) or `max_rooms` are stored (answers -1). KEYS: access, rooms.
/// ARGV: room, edit digest, view digest, max_rooms, owner digest.
pub(super) const CREATE_PRIVATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then
  return 0
end
if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[4]) then return -1 end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'edit', ARGV[2], 'view', ARGV[3], 'owner', ARGV[5], 'locked', '0')
return 1
";

/// Changes a private room's access (new link digests, or its lock) and tells every node with
/// members in it, in one step: a node that reads the room after this sees the change, one that
/// had it open hears it. Answers 0 (nothing changed) if there is no such private room.
/// KEYS: access. ARGV: channel, message, then field and value pairs.
pub(super) const CHANGE_ACCESS: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
";

/// The Lua that deletes a room, shared by the operator's delete and retention: every key of the
/// room (KEYS but the last) and its entry in the room set (the last KEY); `gone` counts them.
/// ARGV[1]: the room.
macro_rules! delete_room_keys {
    () => {
        r"
local gone = redis.call('SREM', KEYS[#KEYS], ARGV[1])
for i = 1, #KEYS - 1 do gone = gone + redis.call('DEL', KEYS[i]) end
"
    };
}

/// Deletes every key of a room and its entry in the room set, and tells every node with members
/// in it. Answers how many keys (and set entries) there were. KEYS: the room's keys, then the
/// room set (`room_keys`). ARGV: room, channel, message (empty: tell nobody).
pub(super) const DELETE_ROOM: &str = concat!(
    delete_room_keys!(),
    r"
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return gone
"
);

/// Retention: deletes the room, every key of it and its entry in the room set, if nobody has had
/// it open for `ttl_ms`. A room with a live presence entry (members on some node) is open: its
/// time becomes now. A room without a time (a private room never opened) starts aging now.
/// KEYS: meta, ops, lease, presence, access, roster, rooms (`room_keys`). ARGV: room, ttl_ms.
/// Answers 1 if the room was deleted.
pub(super) const EXPIRE: &str = concat!(
    r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', KEYS[4])
for i = 1, #all, 2 do
  local count, deadline = string.match(all[i + 1], '^(%d+):(%d+)$')
  if count ~= nil and tonumber(count) > 0 and tonumber(deadline) >= now then
    redis.call('HSET', KEYS[1], 'opened', now)
    return 0
  end
end
local opened = tonumber(redis.call('HGET', KEYS[1], 'opened') or '')
if opened == nil then
  redis.call('HSET', KEYS[1], 'opened', now)
  return 0
end
if opened + tonumber(ARGV[2]) > now then return 0 end
",
    delete_room_keys!(),
    r"
return 1
"
);

/// Sets this node's member count and roster in a room (count 0: removes both) and sums the live
/// entries, dropping those past their deadline (with their rosters); publishes the sum when it
/// changed, and the room-wide roster when any roster changed. KEYS: presence, meta, roster.
/// ARGV: node, count, ttl_ms, channel, roster_json. Answers `{version, total, roster_version,
/// rosters}`: every change of the total (of the rosters) takes the next version, so that a node
/// never shows an older count (list) after a newer one. One script per node per room per change
/// or heartbeat, whatever the number of members.
pub(super) const PRESENCE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local old = redis.call('HGET', KEYS[3], ARGV[1])
local roster_changed = false
if tonumber(ARGV[2]) > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. (now + tonumber(ARGV[3])))
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[5])
  roster_changed = old ~= ARGV[5]
else
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
  roster_changed = old ~= false
end
local total = 0
local rosters = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local count, deadline = string.match(all[i + 1], '^(%d+):(%d+)$')
  if count == nil or tonumber(deadline) < now then
    redis.call('HDEL', KEYS[1], all[i])
    if redis.call('HDEL', KEYS[3], all[i]) == 1 then roster_changed = true end
  else
    total = total + tonumber(count)
    local roster = redis.call('HGET', KEYS[3], all[i])
    if roster then table.insert(rosters, roster) end
  end
end
local version = tonumber(redis.call('HGET', KEYS[2], 'members_v') or '0')
if tostring(total) ~= (redis.call('HGET', KEYS[2], 'members') or '') then
  version = redis.call('HINCRBY', KEYS[2], 'members_v', 1)
  redis.call('HSET', KEYS[2], 'members', total)
  redis.call('PUBLISH', ARGV[4], 'c:' .. version .. ':' .. total)
end
local listed = '[' .. table.concat(rosters, ',') .. ']'
local roster_version = tonumber(redis.call('HGET', KEYS[2], 'roster_v') or '0')
if roster_changed then
  roster_version = redis.call('HINCRBY', KEYS[2], 'roster_v', 1)
  redis.call('PUBLISH', ARGV[4], 'p:' .. roster_version .. ':' .. listed)
end
return {version, total, roster_version, listed}
";
