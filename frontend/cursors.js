// cursors.js — owns live cursors: sending one's own pointer position (at most CURSOR_SEND_MS apart,
// with a trailing update so the last position always goes out) and drawing the others' pointers as
// small arrows with name labels in an overlay over #stage. Positions are logical canvas coordinates,
// mapped to the screen with board.toScreen when the board has it (zoom/pan), else from #board's
// bounding box; the overlay follows the board's 'view' events and window resizes. A cursor hides
// after CURSOR_IDLE_MS without movement or when its owner leaves. Names are set with textContent,
// never as HTML.

const CURSOR_SEND_MS = 50;
const CURSOR_IDLE_MS = 5000;
const COLOR_RE = /^#[0-9a-fA-F]{6}$/;

/** Logical → client (viewport) pixels, through the board's own mapping when it has one. */
function toScreen(board, canvas, x, y) {
  if (typeof board.toScreen === 'function') return board.toScreen(x, y);
  const r = canvas.getBoundingClientRect();
  return {
    x: r.left + (x / board.width) * r.width,
    y: r.top + (y / board.height) * r.height,
  };
}

export function createCursors({ board, canvas, stage, presence, send }) {
  const layer = document.createElement('div');
  layer.className = 'cursor-layer';
  layer.setAttribute('aria-hidden', 'true');
  stage.append(layer);

  /** clientId → { el, label, x, y, timer } */
  const shown = new Map();

  const place = (cursor) => {
    const p = toScreen(board, canvas, cursor.x, cursor.y);
    const origin = layer.getBoundingClientRect();
    cursor.el.style.transform = `translate(${Math.round(p.x - origin.left)}px, ${Math.round(p.y - origin.top)}px)`;
    cursor.el.hidden = false; // hidden from its creation until it is in place
  };
  const placeAll = () => {
    for (const cursor of shown.values()) place(cursor);
  };
  // Moves are applied once per frame: a hundred cursors moving cost one layout read, not one each.
  let frame = 0;
  const placeSoon = () => {
    if (!frame) {
      frame = requestAnimationFrame(() => {
        frame = 0;
        placeAll();
      });
    }
  };
  if (typeof board.addEventListener === 'function') board.addEventListener('view', placeAll);
  window.addEventListener('resize', placeAll);

  const remove = (id) => {
    const cursor = shown.get(id);
    if (!cursor) return;
    clearTimeout(cursor.timer);
    cursor.el.remove();
    shown.delete(id);
  };

  const create = (id) => {
    const el = document.createElement('div');
    el.className = 'remote-cursor';
    el.hidden = true;
    el.dataset.clientId = id;
    const arrow = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
    arrow.setAttribute('viewBox', '0 0 16 16');
    arrow.setAttribute('class', 'remote-cursor-arrow');
    const path = document.createElementNS('http://www.w3.org/2000/svg', 'path');
    path.setAttribute('d', 'M1 1l5.5 13 2-5.5 5.5-2z');
    arrow.append(path);
    const label = document.createElement('span');
    label.className = 'remote-cursor-label';
    el.append(arrow, label);
    layer.append(el);
    return { el, label, x: 0, y: 0, timer: 0 };
  };

  // Sending: throttled, with a trailing update.
  let lastSent = 0;
  let pending = null;
  let timer = 0;
  const flush = () => {
    timer = 0;
    if (!pending) return;
    lastSent = performance.now();
    send({ type: 'cursor', x: pending.x, y: pending.y });
    pending = null;
  };
  canvas.addEventListener('pointermove', (e) => {
    pending = board.toLogical(e.clientX, e.clientY);
    const wait = CURSOR_SEND_MS - (performance.now() - lastSent);
    if (wait <= 0) flush();
    else if (!timer) timer = setTimeout(flush, wait);
  }, { passive: true });

  return {
    /** A `cursor` message from another member. */
    move(msg) {
      const { clientId, x, y } = msg;
      if (typeof clientId !== 'string' || !Number.isFinite(x) || !Number.isFinite(y)) return;
      if (clientId === presence.selfId) return;
      const cursor = shown.get(clientId) ?? create(clientId);
      shown.set(clientId, cursor);
      const member = presence.member(clientId);
      const name = typeof msg.name === 'string' ? msg.name : member?.name ?? '';
      if (cursor.label.textContent !== name) cursor.label.textContent = name;
      const color = member && COLOR_RE.test(member.color) ? member.color : '#4f46e5';
      cursor.el.style.setProperty('--cursor-color', color);
      cursor.x = x;
      cursor.y = y;
      placeSoon();
      clearTimeout(cursor.timer);
      cursor.timer = setTimeout(() => remove(clientId), CURSOR_IDLE_MS);
    },

    /** The member list changed: cursors of those who left go, the others take their names. */
    prune() {
      for (const [id, cursor] of [...shown]) {
        if (!presence.mayBeHere(id)) {
          remove(id);
          continue;
        }
        const name = presence.member(id)?.name;
        if (name !== undefined && cursor.label.textContent !== name) cursor.label.textContent = name;
      }
    },

    /** The connection closed: everyone's cursor goes (the next welcome brings them back). */
    clear() {
      for (const id of [...shown.keys()]) remove(id);
    },
  };
}
