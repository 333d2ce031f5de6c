// board.js — owns the pixels. A master canvas (off-screen, exactly the room's logical size) is
// the source of truth for snapshots and downloads; the visible #board canvas is scaled by CSS
// to fit its container, with a backing store at devicePixelRatio. Every segment is drawn on both.

export const DEFAULT_WIDTH = 1600;
export const DEFAULT_HEIGHT = 900;
const MAX_SIDE = 8192;
const MARGIN = 100;
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

function paint(ctx, seg, sx, sy) {
  ctx.save();
  ctx.setTransform(sx, 0, 0, sy, 0, 0);
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

export class Board {
  /** Called after the visible canvas changed size; set by the owner. */
  onLayout = null;

  constructor(visible, container) {
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

  /** CSS pixels per logical pixel on screen. */
  get displayScale() {
    const w = parseFloat(this.visible.style.width);
    return w > 0 ? w / this.width : 1;
  }

  /** Sets the logical size (clears the picture). */
  setSize(width, height) {
    const ok = (n) => Number.isInteger(n) && n > 0 && n <= MAX_SIDE;
    this.master.width = ok(width) ? width : DEFAULT_WIDTH;
    this.master.height = ok(height) ? height : DEFAULT_HEIGHT;
    this.layout(true);
  }

  /** Fits the visible canvas into its container, keeping the aspect ratio. */
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
    const dpr = window.devicePixelRatio || 1;
    const bw = Math.max(1, Math.round(cssW * dpr));
    const bh = Math.max(1, Math.round(cssH * dpr));
    const cssChanged = this.visible.style.width !== `${cssW}px` || this.visible.style.height !== `${cssH}px`;
    this.visible.style.width = `${cssW}px`;
    this.visible.style.height = `${cssH}px`;
    if (force || bw !== this.visible.width || bh !== this.visible.height) {
      this.visible.width = bw;
      this.visible.height = bh;
      this.redrawVisible();
    }
    if ((force || cssChanged) && this.onLayout) this.onLayout();
  }

  /** Repaints the visible canvas from the master. */
  redrawVisible() {
    const ctx = this.vctx;
    ctx.save();
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.globalCompositeOperation = 'source-over';
    ctx.clearRect(0, 0, this.visible.width, this.visible.height);
    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = 'high';
    ctx.drawImage(this.master, 0, 0, this.visible.width, this.visible.height);
    ctx.restore();
  }

  drawSegment(seg) {
    paint(this.mctx, seg, 1, 1);
    paint(this.vctx, seg, this.visible.width / this.width, this.visible.height / this.height);
  }

  clear() {
    this.mctx.clearRect(0, 0, this.width, this.height);
    this.redrawVisible();
  }

  /** Replaces the picture with a decoded snapshot image. */
  drawSnapshot(img) {
    const ctx = this.mctx;
    ctx.save();
    ctx.globalCompositeOperation = 'source-over';
    ctx.clearRect(0, 0, this.width, this.height);
    ctx.drawImage(img, 0, 0, this.width, this.height);
    ctx.restore();
    this.redrawVisible();
  }

  /** The whole logical canvas as a PNG data URL (transparent where erased). */
  toDataURL() {
    return this.master.toDataURL('image/png');
  }

  /** The picture composited on white, as a PNG blob. */
  toPngOnWhite() {
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

  /** Client (CSS pixel) coordinates → logical coordinates, clamped to the canvas ± margin. */
  toLogical(clientX, clientY) {
    const r = this.visible.getBoundingClientRect();
    const conv = (v, start, extent, size) => {
      const x = extent > 0 ? ((v - start) / extent) * size : 0;
      const clamped = Math.min(size + MARGIN, Math.max(-MARGIN, x));
      return Math.round(clamped * 10) / 10 || 0; // `|| 0` turns -0 into 0
    };
    return {
      x: conv(clientX, r.left, r.width, this.width),
      y: conv(clientY, r.top, r.height, this.height),
    };
  }
}
