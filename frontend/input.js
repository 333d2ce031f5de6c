// input.js — owns pointer input on the visible canvas (mouse, touch, pen): turns each pointer
// move into a line segment in logical coordinates, and a click without movement into a dot.
// One finger draws; two fingers are a pinch/pan gesture (view.js): a second finger arriving ends
// the first finger's stroke, and no finger draws again until all are lifted. A touch stroke's first
// TOUCH_HOLD_MS of segments are held back, so a pinch whose fingers land a moment apart draws nothing.

const TOUCH_HOLD_MS = 80;

/**
 * @param {HTMLCanvasElement} canvas
 * @param {{ toLogical: (x: number, y: number) => {x: number, y: number},
 *           brush: () => {color: string, size: number, tool: string},
 *           onSegment: (seg: object) => void, newStrokeId: () => string }} opts
 */
export function attachInput(canvas, { toLogical, brush, onSegment, newStrokeId, canDraw = () => true }) {
  const strokes = new Map(); // pointerId → { last: {x, y}, moved, brush, id, held: segments | null }
  const touches = new Set(); // touch pointers down on the canvas
  let gesture = false; // two or more fingers came down: no drawing until all are lifted

  const send = (s, seg) => {
    if (s.held) s.held.push(seg);
    else onSegment(seg);
  };
  const release = (s) => {
    if (!s.held) return;
    const held = s.held;
    s.held = null;
    clearTimeout(s.timer);
    for (const seg of held) onSegment(seg);
  };

  const emit = (s, from, to) => {
    send(s, {
      type: 'draw',
      color: s.brush.color,
      startX: from.x,
      startY: from.y,
      endX: to.x,
      endY: to.y,
      size: s.brush.size,
      tool: s.brush.tool,
      strokeId: s.id, // every segment of one pointer press: what undo takes back
    });
  };

  const extendTo = (s, p) => {
    if (p.x === s.last.x && p.y === s.last.y) return;
    emit(s, s.last, p);
    s.last = p;
    s.moved = true;
  };

  canvas.addEventListener('pointerdown', (e) => {
    // Primary button (mouse left, touch contact, pen tip) or a pen's eraser end (button 5).
    if (e.button !== 0 && e.button !== 5) return;
    // A view-only page (or one not yet told it may draw) neither draws nor sends anything.
    if (!canDraw()) return;
    e.preventDefault();
    if (e.pointerType === 'touch') {
      touches.add(e.pointerId);
      if (touches.size > 1) gesture = true;
      if (gesture) {
        // End every touch stroke where it is; one still held back is dropped.
        for (const [id, s] of strokes) {
          if (!s.touch) continue;
          strokes.delete(id);
          clearTimeout(s.timer);
        }
        return;
      }
    }
    try {
      canvas.setPointerCapture(e.pointerId);
    } catch {
      // The pointer may already be gone; drawing still works without capture.
    }
    const b = { ...brush() };
    if (e.button === 5) b.tool = 'eraser';
    const s = { last: toLogical(e.clientX, e.clientY), moved: false, brush: b, id: newStrokeId(), held: null, touch: false };
    if (e.pointerType === 'touch') {
      s.touch = true;
      s.held = [];
      s.timer = setTimeout(() => release(s), TOUCH_HOLD_MS);
    }
    strokes.set(e.pointerId, s);
  });

  canvas.addEventListener('pointermove', (e) => {
    const s = strokes.get(e.pointerId);
    if (!s) return;
    const coalesced = typeof e.getCoalescedEvents === 'function' ? e.getCoalescedEvents() : [];
    for (const ev of coalesced.length ? coalesced : [e]) extendTo(s, toLogical(ev.clientX, ev.clientY));
  });

  canvas.addEventListener('pointerup', (e) => {
    const s = strokes.get(e.pointerId);
    if (!s) return;
    strokes.delete(e.pointerId);
    extendTo(s, toLogical(e.clientX, e.clientY));
    if (!s.moved) emit(s, s.last, s.last);
    release(s);
  });

  const lift = (e) => {
    if (!touches.delete(e.pointerId)) return;
    if (touches.size === 0) gesture = false;
  };
  const abandon = (e) => {
    const s = strokes.get(e.pointerId);
    if (s) {
      strokes.delete(e.pointerId);
      release(s); // what was drawn stays drawn
    }
  };
  canvas.addEventListener('pointerup', lift);
  canvas.addEventListener('pointercancel', lift);
  canvas.addEventListener('pointercancel', abandon);
  canvas.addEventListener('lostpointercapture', abandon);

  // Long-press menus and drag/select gestures would interrupt drawing.
  for (const type of ['contextmenu', 'selectstart', 'dragstart']) {
    canvas.addEventListener(type, (e) => e.preventDefault());
  }
}
