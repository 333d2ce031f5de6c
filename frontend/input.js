// input.js — owns pointer input on the visible canvas (mouse, touch, pen): turns each pointer
// move into a line segment in logical coordinates, and a click without movement into a dot.

/**
 * @param {HTMLCanvasElement} canvas
 * @param {{ toLogical: (x: number, y: number) => {x: number, y: number},
 *           brush: () => {color: string, size: number, tool: string},
 *           onSegment: (seg: object) => void }} opts
 */
export function attachInput(canvas, { toLogical, brush, onSegment, canDraw = () => true }) {
  const strokes = new Map(); // pointerId → { last: {x, y}, moved: boolean, brush }

  const emit = (s, from, to) => {
    onSegment({
      type: 'draw',
      color: s.brush.color,
      startX: from.x,
      startY: from.y,
      endX: to.x,
      endY: to.y,
      size: s.brush.size,
      tool: s.brush.tool,
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
    try {
      canvas.setPointerCapture(e.pointerId);
    } catch {
      // The pointer may already be gone; drawing still works without capture.
    }
    const b = { ...brush() };
    if (e.button === 5) b.tool = 'eraser';
    strokes.set(e.pointerId, { last: toLogical(e.clientX, e.clientY), moved: false, brush: b });
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
  });

  const abandon = (e) => strokes.delete(e.pointerId);
  canvas.addEventListener('pointercancel', abandon);
  canvas.addEventListener('lostpointercapture', abandon);

  // Long-press menus and drag/select gestures would interrupt drawing.
  for (const type of ['contextmenu', 'selectstart', 'dragstart']) {
    canvas.addEventListener(type, (e) => e.preventDefault());
  }
}
