// room.js — owns room names: reading the current room from the URL, validating names,
// and building the page path and WebSocket URL for a room.

export const DEFAULT_ROOM = 'main';
const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;

export function isValidRoom(name) {
  return typeof name === 'string' && ROOM_RE.test(name);
}

/** `/r/NAME` → NAME, anything else → `main`. */
export function roomFromPath(pathname) {
  const m = /^\/r\/([^/]+)\/?$/.exec(pathname);
  if (!m) return DEFAULT_ROOM;
  try {
    return decodeURIComponent(m[1]);
  } catch {
    return m[1];
  }
}

/** The page path for a room: `/` for main, `/r/NAME` otherwise. */
export function roomPath(name) {
  return name === DEFAULT_ROOM ? '/' : `/r/${encodeURIComponent(name)}`;
}

export function wsUrl(room, loc = location, token = null) {
  const scheme = loc.protocol === 'https:' ? 'wss' : 'ws';
  // batch=1: the server gathers what it sends us within a short tick into one frame.
  // token: a private room's edit or view token, from the page's own URL.
  const auth = token ? `&token=${encodeURIComponent(token)}` : '';
  return `${scheme}://${loc.host}/ws/${encodeURIComponent(room)}?batch=1${auth}`;
}
