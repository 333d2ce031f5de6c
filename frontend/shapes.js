// shapes.js — owns what a `shape` is on the page: checking a relayed one, its geometry (the same
// as the server's src/shapes.rs: corners, the arrow head, a flat box drawn as a line, a point as a
// dot), painting it, and Shift's constraint while dragging. Pure but for painting onto a 2D
// context it is given (no DOM at import, so `node --test` runs it). It must never paint a shape
// differently from the server: a change here is a change in src/shapes.rs.

export const SHAPE_KINDS = ['line', 'rect', 'ellipse', 'arrow'];
/** An arrow head's length per logical pixel of line width, and its least length (src/shapes.rs). */
export const ARROW_HEAD_PER_SIZE = 4;
export const MIN_ARROW_HEAD_PX = 12;
export const ARROW_HEAD_ANGLE_RAD = Math.PI / 6;
const MIN_SIZE = 1;
const MAX_SIZE = 64;
const COLOR_RE = /^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$/;

export const isShapeKind = (kind) => SHAPE_KINDS.includes(kind);
export const isFillable = (kind) => kind === 'rect' || kind === 'ellipse';

/** A relayed shape message as an op for the board, or null if it is not a usable shape. */
export function toShape(msg) {
  if (!isShapeKind(msg.shape)) return null;
  const { x1, y1, x2, y2 } = msg;
  if (![x1, y1, x2, y2].every(Number.isFinite)) return null;
  const color = typeof msg.color === 'string' && COLOR_RE.test(msg.color) ? msg.color : '#000000';
  const size = Number.isFinite(msg.size) ? Math.min(MAX_SIZE, Math.max(MIN_SIZE, msg.size)) : 2;
  const fill = isFillable(msg.shape) && typeof msg.fill === 'string' && COLOR_RE.test(msg.fill) ? msg.fill : null;
  return { type: 'shape', shape: msg.shape, x1, y1, x2, y2, color, size, fill };
}

export function arrowHeadLength(size) {
  return Math.max(size * ARROW_HEAD_PER_SIZE, MIN_ARROW_HEAD_PX);
}

/** The ends of the two sides of an arrow's head, which meet at (x2, y2). */
export function arrowHead({ x1, y1, x2, y2, size }) {
  const angle = Math.atan2(y2 - y1, x2 - x1);
  const length = arrowHeadLength(size);
  const side = (turn) => [x2 - length * Math.cos(angle + turn), y2 - length * Math.sin(angle + turn)];
  return [side(ARROW_HEAD_ANGLE_RAD), side(-ARROW_HEAD_ANGLE_RAD)];
}

/**
 * What to draw for a shape: `{dot: [x, y, r]}`, or `{parts, closed}` with parts a list of
 * `['move'|'line', x, y]`, `['close']` and `['ellipse', cx, cy, rx, ry]`.
 */
export function outline(s) {
  const { x1, y1, x2, y2 } = s;
  if (x1 === x2 && y1 === y2 && s.shape !== 'arrow') return { dot: [x1, y1, s.size / 2] };
  const flat = x1 === x2 || y1 === y2;
  const line = [['move', x1, y1], ['line', x2, y2]];
  if (s.shape === 'line' || (flat && isFillable(s.shape))) return { parts: line, closed: false };
  if (s.shape === 'rect') {
    return {
      parts: [['move', x1, y1], ['line', x2, y1], ['line', x2, y2], ['line', x1, y2], ['close']],
      closed: true,
    };
  }
  if (s.shape === 'ellipse') {
    return { parts: [['ellipse', (x1 + x2) / 2, (y1 + y2) / 2, Math.abs(x2 - x1) / 2, Math.abs(y2 - y1) / 2]], closed: true };
  }
  const [left, right] = arrowHead(s);
  return { parts: [...line, ['move', ...left], ['line', x2, y2], ['line', ...right]], closed: false };
}

/** Paints a shape op with the transform (a, 0, 0, d, e, f) from logical to canvas pixels. */
export function paintShape(ctx, s, a, d, e = 0, f = 0) {
  ctx.save();
  ctx.setTransform(a, 0, 0, d, e, f);
  ctx.globalCompositeOperation = 'source-over';
  ctx.strokeStyle = s.color;
  ctx.fillStyle = s.color;
  ctx.lineWidth = s.size;
  ctx.lineCap = 'round';
  ctx.lineJoin = 'round';
  ctx.beginPath();
  const o = outline(s);
  if (o.dot) {
    ctx.arc(o.dot[0], o.dot[1], o.dot[2], 0, Math.PI * 2);
    ctx.fill();
  } else {
    for (const [kind, ...n] of o.parts) {
      if (kind === 'move') ctx.moveTo(n[0], n[1]);
      else if (kind === 'line') ctx.lineTo(n[0], n[1]);
      else if (kind === 'close') ctx.closePath();
      else ctx.ellipse(n[0], n[1], n[2], n[3], 0, 0, Math.PI * 2);
    }
    if (o.closed && s.fill) {
      ctx.fillStyle = s.fill;
      ctx.fill();
    }
    ctx.stroke();
  }
  ctx.restore();
}

/**
 * Shift while dragging: a line or arrow goes horizontal or vertical (whichever is nearer), a
 * rectangle becomes a square and an ellipse a circle (the larger side wins). Returns the new end.
 */
export function constrain(kind, from, to) {
  const dx = to.x - from.x;
  const dy = to.y - from.y;
  if (kind === 'line' || kind === 'arrow') {
    return Math.abs(dx) >= Math.abs(dy) ? { x: to.x, y: from.y } : { x: from.x, y: to.y };
  }
  const side = Math.max(Math.abs(dx), Math.abs(dy));
  const sign = (v) => (v < 0 ? -1 : 1);
  return { x: from.x + sign(dx) * side, y: from.y + sign(dy) * side };
}
