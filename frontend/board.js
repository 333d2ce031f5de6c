// board.js — owns the pixels. The picture is a base (the picture the server sent, or blank) and an
// operation log of every draw and clear applied since (see oplog.js), so that the ops of a stroke
// can be hidden and shown again (undo/redo) and re-drawn as vectors at any zoom.
// A master canvas (off-screen, exactly the room's logical size) holds base + visible log: it is the
// source of truth for snapshots and downloads. The visible #board canvas fills its container (at
// "fit", the whole board keeping its aspect ratio; zoomed, up to the whole stage), with a backing
// store at devicePixelRatio; view.js's ViewTransform maps logical to canvas coordinates.
// Each op is painted on both at once (the fast path). Re-renders (hiding a stroke, zoom, pan) are
// coalesced into one animation frame; see #renderMaster and #renderVisible for their cost.
// The log is bounded (MAX_LOG_OPS): beyond it the oldest ops are folded into the base bitmap, and a
// stroke folded away can no longer be hidden locally.

import { OpLog } from './oplog.js';
import { ViewTransform, MIN_ZOOM } from './view.js';
import { paintShape, toShape } from './shapes.js';
import { paintText, toText } from './text.js';

export const DEFAULT_WIDTH = 1600;
export const DEFAULT_HEIGHT = 900;
const MAX_SIDE = 8192;
const MARGIN = 100;
/** At most this many ops are kept in the log; older ones are folded into the base. */
export const MAX_LOG_OPS = 50000;
const FOLD_CHUNK = 5000; // folded at once, so folding (a replay of these) is rare
/**
 * Cached pictures of the master after the visible ops of a log prefix ("checkpoints"): one every
 * CHECKPOINT_EVERY ops appended, and one at the earliest op a re-render found changed; at most
 * MAX_CHECKPOINTS (each is a canvas of the logical size: 5.8 MB at 1600x900).
 */
const CHECKPOINT_EVERY = 2000;
const MAX_CHECKPOINTS = 3;
/** While a gesture moves the view, a log longer than this is previewed from the master bitmap. */
const INTERACTIVE_VECTOR_OPS = 5000;
const SETTLE_MS = 150; // …and drawn crisp once the view stops moving for this long
/** Backing pixels per logical pixel above which the visible canvas is re-drawn as vectors. */
const VECTOR_ABOVE = 1.05;
const COLOR_RE = /^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$/;

/** Validates a draw message into a segment, or returns null. */
export function toSegment(msg) {
  const { startX, startY, endX, endY } = msg;
  if (![startX, startY, endX, endY].every(Number.isFinite)) return null;
  const color = typeof msg.color === 'string' && COLOR_RE.test(msg.color) ? msg.color : '#000000';
  const size = Number.isFinite(msg.size) ? Math.min(64, Math.max(1, msg.size)) : 2;
  const tool = msg.tool === 'eraser' ? 'eraser' : 'pen';
  return { type: 'draw', color, startX, startY, endX, endY, size, tool };
}

/** Loads a PNG data URL received from a peer. Resolves to a decoded image. */
export function decodeImage(dataUrl) {
  return new Promise((resolve, reject) => {
    if (typeof dataUrl !== 'string' || !dataUrl.startsWith('data:image/png')) {
      reject(new Error('not a PNG data URL'));
      return;
    }
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error('image failed to decode'));
    img.src = dataUrl;
  });
}

/** Paints a draw op with the transform (a, 0, 0, d, e, f) from logical to canvas pixels. */
function paint(ctx, seg, a, d, e = 0, f = 0) {
  ctx.save();
  ctx.setTransform(a, 0, 0, d, e, f);
  ctx.globalCompositeOperation = seg.tool === 'eraser' ? 'destination-out' : 'source-over';
  ctx.strokeStyle = seg.color;
  ctx.fillStyle = seg.color;
  ctx.lineWidth = seg.size;
  ctx.lineCap = 'round';
  ctx.lineJoin = 'round';
  ctx.beginPath();
  if (seg.startX === seg.endX && seg.startY === seg.endY) {
    // A dot: what a round-capped zero-length line would look like, drawn explicitly.
    ctx.arc(seg.startX, seg.startY, seg.size / 2, 0, Math.PI * 2);
    ctx.fill();
  } else {
    ctx.moveTo(seg.startX, seg.startY);
    ctx.lineTo(seg.endX, seg.endY);
    ctx.stroke();
  }
  ctx.restore();
}

function wipe(ctx) {
  ctx.save();
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.globalCompositeOperation = 'source-over';
  ctx.clearRect(0, 0, ctx.canvas.width, ctx.canvas.height);
  ctx.restore();
}

/** Draws a bitmap (the base, the master) with the transform (a, 0, 0, d, e, f). */
function blit(ctx, bitmap, a, d, e = 0, f = 0) {
  ctx.save();
  ctx.setTransform(a, 0, 0, d, e, f);
  ctx.globalCompositeOperation = 'source-over';
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage(bitmap, 0, 0);
  ctx.restore();
}

function paintOp(ctx, op, a, d, e = 0, f = 0) {
  if (op.type === 'clear') wipe(ctx);
  else if (op.type === 'shape') paintShape(ctx, op, a, d, e, f);
  else if (op.type === 'text') paintText(ctx, op, a, d, e, f);
  else paint(ctx, op, a, d, e, f);
}

/** The log's copy of an op: only the fields that paint it (and its stroke id). */
function logEntry(op) {
  switch (op.type) {
    case 'clear':
      return { type: 'clear' };
    case 'shape':
      return toShape(op);
    case 'text':
      return toText(op);
    default:
      return {
        type: 'draw',
        color: op.color,
        startX: op.startX,
        startY: op.startY,
        endX: op.endX,
        endY: op.endY,
        size: op.size,
        tool: op.tool,
      };
  }
}

function makeCanvas(width, height) {
  const c = document.createElement('canvas');
  c.width = width;
  c.height = height;
  return c;
}

/**
 * The board: base + operation log, a master canvas and the visible canvas.
 *
 * Events: `view` (an Event) whenever the mapping between logical and screen coordinates changes
 * (layout, zoom, pan); read `zoom`, `displayScale`, `toScreen()` and `toLogical()` then.
 */
export class Board extends EventTarget {
  /** Called after the visible canvas changed size (kept for old callers; prefer the `view` event). */
  onLayout = null;

  #log = new OpLog();
  #base = null; // a canvas of the logical size, or null (blank)
  #checkpoints = []; // [{ canvas, index }] by index: the master's picture after the visible ops of log[0, index)
  #masterDirtyFrom = -1; // the master must be re-rendered (the log changed from this index on)
  #frame = 0; // a pending requestAnimationFrame for the re-render
  #view = new ViewTransform();
  #interactiveAt = -Infinity;
  #starting = true; // the view is the start view (view.js's startZoom) until someone zooms or pans
  #settle = 0;

  constructor(visible, container) {
    super();
    this.visible = visible;
    this.container = container;
    this.vctx = visible.getContext('2d');
    this.master = document.createElement('canvas');
    this.mctx = this.master.getContext('2d');
    this.setSize(DEFAULT_WIDTH, DEFAULT_HEIGHT);
    new ResizeObserver(() => this.layout()).observe(container);
    // Also catches devicePixelRatio changes (browser zoom, moving to another screen).
    window.addEventListener('resize', () => this.layout());
  }

  get width() {
    return this.master.width;
  }

  get height() {
    return this.master.height;
  }

  /** The zoom relative to "fit" (1 = the whole board fits the stage). */
  get zoom() {
    return this.#view.zoom;
  }

  /** CSS pixels per logical pixel on screen (zoom included). */
  get displayScale() {
    return this.#view.scaleX;
  }

  /** Number of ops in the log (since the base). */
  get logLength() {
    return this.#log.length;
  }

  /** Sets the logical size (clears the picture, and the zoom). */
  setSize(width, height) {
    const ok = (n) => Number.isInteger(n) && n > 0 && n <= MAX_SIDE;
    this.master.width = ok(width) ? width : DEFAULT_WIDTH;
    this.master.height = ok(height) ? height : DEFAULT_HEIGHT;
    this.#base = null;
    this.#resetLog();
    this.#view.setZoom(MIN_ZOOM);
    this.#starting = true;
    this.layout(true);
  }

  /**
   * Fits the visible canvas into its container (zoom applied), keeping the aspect ratio; a view
   * nobody has zoomed or panned yet opens at the start zoom (fit, or filling a phone's stage).
   */
  layout(force = false) {
    const cs = getComputedStyle(this.container);
    const availW = this.container.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
    const availH = this.container.clientHeight - parseFloat(cs.paddingTop) - parseFloat(cs.paddingBottom);
    if (!(availW > 0 && availH > 0)) return;
    const aspect = this.width / this.height;
    let cssW = availW;
    let cssH = availW / aspect;
    if (cssH > availH) {
      cssH = availH;
      cssW = availH * aspect;
    }
    cssW = Math.max(1, Math.floor(cssW));
    cssH = Math.max(1, Math.floor(cssH));
    this.#view.setLayout({ logicalW: this.width, logicalH: this.height, fitW: cssW, fitH: cssH, availW, availH });
    // Until someone zooms or pans, a new layout (a phone turned on its side) opens afresh.
    if (this.#starting) this.#view.start();
    this.#applyView(force, true);
  }

  /** Sizes the visible canvas for the current view (a new backing store is blank). */
  #sizeCanvas(force) {
    const v = this.#view;
    const cssW = v.canvasW;
    const cssH = v.canvasH;
    const dpr = window.devicePixelRatio || 1;
    const bw = Math.max(1, Math.round(cssW * dpr));
    const bh = Math.max(1, Math.round(cssH * dpr));
    const cssChanged = this.visible.style.width !== `${cssW}px` || this.visible.style.height !== `${cssH}px`;
    this.visible.style.width = `${cssW}px`;
    this.visible.style.height = `${cssH}px`;
    const resized = force || bw !== this.visible.width || bh !== this.visible.height;
    if (resized) {
      this.visible.width = bw;
      this.visible.height = bh;
    }
    return { resized, cssChanged };
  }

  /**
   * Sizes the visible canvas for the current view and re-renders it: now if `sync` (layout, as
   * the board always did) and it was resized, else in the next frame (zoom, pan).
   */
  #applyView(force, sync) {
    const { resized, cssChanged } = this.#sizeCanvas(force);
    if (sync && resized) this.#renderNow(false);
    else if (!sync) this.#requestRender();
    if (force || cssChanged || !sync) {
      if (this.onLayout) this.onLayout();
      this.dispatchEvent(new Event('view'));
    }
  }

  // ---- zoom and pan (view.js calls these) ----

  /**
   * Zooms to `zoom` (clamped to [1, MAX_ZOOM]) keeping `anchor` (a logical point; by default the
   * one under the client point) at client point (clientX, clientY), as far as the pan allows.
   * `interactive`: part of a gesture (a long log is then previewed, and drawn crisp when it stops).
   */
  zoomAt(zoom, clientX, clientY, { anchor = null, interactive = false } = {}) {
    this.#starting = false;
    const p = anchor ?? this.toBoard(clientX, clientY);
    this.#view.setZoom(zoom);
    this.#sizeCanvas(false); // the canvas's CSS size may change: the rectangle below is the new one
    const r = this.visible.getBoundingClientRect();
    const v = this.#view;
    if (r.width > 0 && r.height > 0) {
      v.place(p.x, p.y, ((clientX - r.left) * v.canvasW) / r.width, ((clientY - r.top) * v.canvasH) / r.height);
    }
    this.#viewChanged(interactive);
  }

  /** Pans by (dx, dy) CSS pixels (positive: the view moves right/down over the board). */
  panBy(dx, dy, { interactive = false } = {}) {
    this.#starting = false;
    const v = this.#view;
    v.ox += dx;
    v.oy += dy;
    v.clamp();
    this.#viewChanged(interactive);
  }

  /** Back to "fit": the whole board, mapped exactly as without zoom. */
  fit() {
    this.#starting = false;
    this.#view.setZoom(MIN_ZOOM);
    this.#applyView(false, false);
  }

  #viewChanged(interactive) {
    if (interactive) {
      this.#interactiveAt = performance.now();
      clearTimeout(this.#settle);
      this.#settle = setTimeout(() => this.#requestRender(), SETTLE_MS);
    }
    this.#applyView(false, false);
  }

  // ---- the picture: base + operation log ----

  /** Replaces the picture with a decoded image (null: blank) and empties the log. */
  setBase(img) {
    if (img) {
      this.#base = makeCanvas(this.width, this.height);
      this.#base.getContext('2d').drawImage(img, 0, 0, this.width, this.height);
    } else {
      this.#base = null;
    }
    this.#resetLog();
    this.#renderNow();
  }

  /**
   * Appends an op (`{type:'draw', color, startX, startY, endX, endY, size, tool, strokeId?}`, a
   * shape or text (shapes.js, text.js) or `{type:'clear', strokeId?}`) to the log and paints it on
   * both canvases.
   */
  apply(op) {
    const entry = logEntry(op);
    if (!entry) return;
    if (op.strokeId !== undefined && op.strokeId !== null) entry.strokeId = op.strokeId;
    this.#log.push(entry);
    if (this.#masterDirtyFrom < 0) {
      paintOp(this.mctx, entry, 1, 1); // else the pending re-render has it
      const last = this.#checkpoints.at(-1)?.index ?? 0;
      if (this.#log.length - last >= CHECKPOINT_EVERY) this.#checkpoint(this.#log.length);
    }
    if (!this.#frame) {
      const [a, d, e, f] = this.#visibleTransform();
      paintOp(this.vctx, entry, a, d, e, f);
    }
    if (this.#log.length > MAX_LOG_OPS) this.#fold(FOLD_CHUNK);
  }

  /**
   * Hides (or shows again) every logged op with this stroke id, draws and clears alike; the master
   * and the visible canvas are re-rendered (in the next animation frame; toDataURL, toPngOnWhite
   * and flush() bring the master up to date at once). Returns whether any op had that id.
   */
  setHidden(strokeId, hidden) {
    const { first, changed } = this.#log.setHidden(strokeId, hidden);
    if (changed >= 0) {
      // A checkpoint past the change includes a changed op: drop it.
      this.#checkpoints = this.#checkpoints.filter((c) => c.index <= changed);
      this.#masterDirtyFrom = this.#masterDirtyFrom < 0 ? changed : Math.min(this.#masterDirtyFrom, changed);
      this.#requestRender();
    }
    return first >= 0;
  }

  /** Whether an op of the log (not folded into the base yet) has this stroke id. */
  hasStroke(strokeId) {
    return this.#log.hasStroke(strokeId);
  }

  /** Paints everything again (the shipped font arrived: texts drawn before it are re-drawn). */
  repaint() {
    this.#checkpoints = [];
    this.#masterDirtyFrom = 0;
    this.#requestRender();
  }

  /** Logical → visible backing pixels: [a, d, e, f] of setTransform(a, 0, 0, d, e, f). */
  visibleTransform() {
    return this.#visibleTransform();
  }

  /** Does a pending re-render now. */
  flush() {
    if (this.#frame) this.#renderNow(false);
  }

  // Old names, for callers written before the log.
  drawSegment(seg) {
    this.apply(seg);
  }

  clear() {
    this.apply({ type: 'clear' });
  }

  drawSnapshot(img) {
    this.setBase(img);
  }

  /** The whole logical canvas as a PNG data URL (transparent where erased). */
  toDataURL() {
    this.#renderMaster();
    return this.master.toDataURL('image/png');
  }

  /** The picture composited on white, as a PNG blob. */
  toPngOnWhite() {
    this.#renderMaster();
    const out = document.createElement('canvas');
    out.width = this.width;
    out.height = this.height;
    const ctx = out.getContext('2d');
    ctx.fillStyle = '#ffffff';
    ctx.fillRect(0, 0, out.width, out.height);
    ctx.drawImage(this.master, 0, 0);
    return new Promise((resolve, reject) => {
      out.toBlob((blob) => (blob ? resolve(blob) : reject(new Error('toBlob failed'))), 'image/png');
    });
  }

  // ---- coordinates ----

  /** Client (CSS pixel) coordinates → logical coordinates, unclamped and unrounded. */
  toBoard(clientX, clientY) {
    const r = this.visible.getBoundingClientRect();
    const v = this.#view;
    const cx = r.width > 0 ? ((clientX - r.left) / r.width) * v.canvasW : 0;
    const cy = r.height > 0 ? ((clientY - r.top) / r.height) * v.canvasH : 0;
    return v.fromCanvas(cx, cy);
  }

  /** Client (CSS pixel) coordinates → logical coordinates, clamped to the canvas ± margin. */
  toLogical(clientX, clientY) {
    const round = (x, size) => {
      const clamped = Math.min(size + MARGIN, Math.max(-MARGIN, x));
      return Math.round(clamped * 10) / 10 || 0; // `|| 0` turns -0 into 0
    };
    if (this.#view.zoom === MIN_ZOOM) {
      // At "fit" exactly the mapping the board always had.
      const r = this.visible.getBoundingClientRect();
      const conv = (v, start, extent, size) => round(extent > 0 ? ((v - start) / extent) * size : 0, size);
      return { x: conv(clientX, r.left, r.width, this.width), y: conv(clientY, r.top, r.height, this.height) };
    }
    const p = this.toBoard(clientX, clientY);
    return { x: round(p.x, this.width), y: round(p.y, this.height) };
  }

  /** Logical coordinates → client (viewport CSS pixel) coordinates: the inverse of toLogical. */
  toScreen(x, y) {
    const r = this.visible.getBoundingClientRect();
    const v = this.#view;
    const c = v.toCanvas(x, y);
    return { x: r.left + (c.x * r.width) / v.canvasW, y: r.top + (c.y * r.height) / v.canvasH };
  }

  // ---- rendering ----

  /** Logical → visible backing pixels: [a, d, e, f] of setTransform(a, 0, 0, d, e, f). */
  #visibleTransform() {
    const v = this.#view;
    const bw = this.visible.width;
    const bh = this.visible.height;
    if (v.zoom === MIN_ZOOM) return [bw / this.width, bh / this.height, 0, 0];
    const kx = bw / v.canvasW;
    const ky = bh / v.canvasH;
    return [v.scaleX * kx, v.scaleY * ky, -v.ox * kx, -v.oy * ky];
  }

  #resetLog() {
    this.#log.reset();
    this.#checkpoints = [];
    this.#masterDirtyFrom = -1;
  }

  #requestRender() {
    if (this.#frame) return;
    this.#frame = requestAnimationFrame(() => {
      this.#frame = 0;
      this.#renderMaster();
      this.#renderVisible();
    });
  }

  #renderNow(master = true) {
    if (this.#frame) {
      cancelAnimationFrame(this.#frame);
      this.#frame = 0;
    }
    if (master) this.#masterDirtyFrom = Math.max(0, this.#masterDirtyFrom); // setBase/setSize: all of it
    this.#renderMaster();
    this.#renderVisible();
  }

  /**
   * Re-renders the master (if the log changed) from the best starting point: after the last
   * visible clear, else the latest checkpoint (all are before the earliest op whose visibility
   * changed), else the base. A checkpoint is then taken at the earliest changed op, so toggling the
   * same stroke again (undo, redo) replays only the ops after it. Hiding a recent stroke replays at
   * most CHECKPOINT_EVERY ops plus those after it.
   */
  #renderMaster() {
    const dirtyFrom = this.#masterDirtyFrom;
    if (dirtyFrom < 0) return;
    this.#masterDirtyFrom = -1;
    const log = this.#log;
    const end = log.length;
    const cached = this.#checkpoints.filter((c) => c.index <= Math.min(end, dirtyFrom)).at(-1) ?? null;
    const plan = log.replayPlan(end, cached ? cached.index : -1);
    const ctx = this.mctx;
    wipe(ctx);
    if (plan.start === 'base' && this.#base) blit(ctx, this.#base, 1, 1);
    if (plan.start === 'cached') blit(ctx, cached.canvas, 1, 1);
    const captureAt = Math.min(end, Math.max(plan.from, dirtyFrom));
    const capture = captureAt > 0 && !this.#checkpoints.some((c) => c.index === captureAt);
    const entries = log.entries;
    for (let i = plan.from; i <= end; i++) {
      if (capture && i === captureAt) this.#checkpoint(i);
      if (i === end) break;
      const e = entries[i];
      if (!e.hidden) paintOp(ctx, e.op, 1, 1);
    }
  }

  /** Copies the master, which shows base + the visible ops of log[0, index), as a checkpoint. */
  #checkpoint(index) {
    const list = this.#checkpoints.filter((c) => c.index !== index);
    let canvas = null;
    if (list.length >= MAX_CHECKPOINTS) {
      // Reuse the canvas of the oldest.
      canvas = list.splice(0, 1)[0].canvas;
    }
    if (!canvas || canvas.width !== this.width || canvas.height !== this.height) {
      canvas = makeCanvas(this.width, this.height);
    }
    const ctx = canvas.getContext('2d');
    wipe(ctx);
    blit(ctx, this.master, 1, 1);
    list.push({ canvas, index });
    list.sort((a, b) => a.index - b.index);
    this.#checkpoints = list;
  }

  /**
   * Re-renders the visible canvas. When its backing store has no more pixels per logical pixel
   * than the master (e.g. at "fit" on most screens), the master bitmap is drawn scaled, as the board
   * always did. Zoomed in further, the base is drawn with the transform (it is only as sharp as its
   * pixels) and the visible ops are re-drawn as vectors at the zoomed resolution, from the last
   * visible clear, skipping those outside the viewport. While a gesture moves the view over a long
   * log, the master bitmap stands in until the view rests for SETTLE_MS.
   */
  #renderVisible() {
    const ctx = this.vctx;
    const [a, d, e, f] = this.#visibleTransform();
    wipe(ctx);
    const vector = a > VECTOR_ABOVE || d > VECTOR_ABOVE;
    const moving = performance.now() - this.#interactiveAt < SETTLE_MS;
    if (!vector || (moving && this.#log.length > INTERACTIVE_VECTOR_OPS)) {
      this.#renderMaster();
      if (this.#view.zoom === MIN_ZOOM) {
        ctx.save();
        ctx.imageSmoothingEnabled = true;
        ctx.imageSmoothingQuality = 'high';
        ctx.drawImage(this.master, 0, 0, this.visible.width, this.visible.height);
        ctx.restore();
      } else {
        blit(ctx, this.master, a, d, e, f);
      }
      return;
    }
    const log = this.#log;
    const plan = log.replayPlan(log.length, -1);
    if (plan.start === 'base' && this.#base) blit(ctx, this.#base, a, d, e, f);
    // The viewport in logical coordinates, to skip ops that cannot show.
    const x0 = -e / a;
    const y0 = -f / d;
    const x1 = (this.visible.width - e) / a;
    const y1 = (this.visible.height - f) / d;
    const entries = log.entries;
    for (let i = plan.from; i < entries.length; i++) {
      const en = entries[i];
      if (en.hidden) continue;
      const op = en.op;
      if (op.type === 'draw') {
        const r = op.size / 2 + 1;
        if (
          Math.max(op.startX, op.endX) + r < x0 ||
          Math.min(op.startX, op.endX) - r > x1 ||
          Math.max(op.startY, op.endY) + r < y0 ||
          Math.min(op.startY, op.endY) - r > y1
        ) {
          continue;
        }
      }
      paintOp(ctx, op, a, d, e, f);
    }
  }

  /** Folds the `count` oldest ops into the base bitmap (they can no longer be hidden). */
  #fold(count) {
    this.#renderMaster();
    const ops = this.#log.foldOldest(count);
    if (!this.#base) this.#base = makeCanvas(this.width, this.height);
    const ctx = this.#base.getContext('2d');
    for (const op of ops) paintOp(ctx, op, 1, 1);
    // A checkpoint at or before the fold is the new base (or older): no longer needed.
    this.#checkpoints = this.#checkpoints
      .map((c) => ({ canvas: c.canvas, index: c.index - count }))
      .filter((c) => c.index > 0);
  }
}
