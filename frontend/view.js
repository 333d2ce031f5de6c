// view.js — owns zoom and pan: the view transform (pure arithmetic, used by Board) and the controls
// that change it: Ctrl/Cmd+wheel (and the trackpad pinch, delivered as wheel events with ctrlKey)
// zooms around the pointer, a plain wheel pans when zoomed (Shift+wheel horizontally), two fingers
// pinch-zoom and pan on touch screens, the −/+/Fit control, and the + - 0 keys.
//
// Zoom is relative to "fit" (1 = the whole board fits the stage, as without zoom), from 1 to
// MAX_ZOOM. Drawing stays in logical coordinates: the view only changes what this page shows.

export const MIN_ZOOM = 1;
export const MAX_ZOOM = 8;
/** A fitted board covering less than this share of the stage opens zoomed to fill it. */
export const START_FILL_BELOW = 0.5;
const STEP = 1.25; // one click of − / + or one key press
const WHEEL_ZOOM_PER_PX = 0.003; // Ctrl+wheel: a 100 px notch zooms by e^0.3 ≈ 1.35
const LINE_PX = 16;

const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

/**
 * The mapping between logical board coordinates and the visible canvas, in CSS pixels.
 * Layout gives the fitted size (fitW x fitH, what the board takes at zoom 1) and the available
 * area; at zoom z the board's content is fitW*z x fitH*z and the canvas shows a window of it,
 * at most the available area, offset by (ox, oy) CSS pixels from the content's top-left corner.
 * The offsets are clamped so the window always lies within the board: it stays reachable.
 */
export class ViewTransform {
  zoom = MIN_ZOOM;
  ox = 0;
  oy = 0;
  logicalW = 1;
  logicalH = 1;
  fitW = 1;
  fitH = 1;
  availW = 1;
  availH = 1;

  setLayout({ logicalW, logicalH, fitW, fitH, availW, availH }) {
    Object.assign(this, { logicalW, logicalH, fitW, fitH, availW, availH });
    this.clamp();
  }

  /** The canvas's CSS size: the fitted size at zoom 1, else the content up to the available area. */
  get canvasW() {
    if (this.zoom === MIN_ZOOM) return this.fitW;
    return Math.max(1, Math.floor(Math.min(Math.max(this.availW, this.fitW), this.fitW * this.zoom)));
  }

  get canvasH() {
    if (this.zoom === MIN_ZOOM) return this.fitH;
    return Math.max(1, Math.floor(Math.min(Math.max(this.availH, this.fitH), this.fitH * this.zoom)));
  }

  /** CSS pixels per logical pixel. */
  get scaleX() {
    return (this.zoom * this.fitW) / this.logicalW;
  }

  get scaleY() {
    return (this.zoom * this.fitH) / this.logicalH;
  }

  /**
   * The zoom a fresh view opens at: fit, unless the fitted board would cover less than
   * START_FILL_BELOW of the available area (a 16:9 board on a phone held upright), then the zoom
   * at which the canvas fills that area (style.css sizes the canvas so before any script runs).
   */
  get startZoom() {
    if (this.fitW * this.fitH >= START_FILL_BELOW * this.availW * this.availH) return MIN_ZOOM;
    return clamp(Math.max(this.availW / this.fitW, this.availH / this.fitH), MIN_ZOOM, MAX_ZOOM);
  }

  /** Opens at the start zoom, centred on the board's middle. */
  start() {
    this.setZoom(this.startZoom);
    this.place(this.logicalW / 2, this.logicalH / 2, this.canvasW / 2, this.canvasH / 2);
  }

  setZoom(zoom) {
    this.zoom = clamp(Number.isFinite(zoom) ? zoom : MIN_ZOOM, MIN_ZOOM, MAX_ZOOM);
    // Snap to fit, so that "fit" maps exactly as without zoom.
    if (this.zoom < MIN_ZOOM * 1.001) this.zoom = MIN_ZOOM;
    this.clamp();
  }

  clamp() {
    this.ox = clamp(this.ox, 0, Math.max(0, this.fitW * this.zoom - this.canvasW));
    this.oy = clamp(this.oy, 0, Math.max(0, this.fitH * this.zoom - this.canvasH));
    if (this.zoom === MIN_ZOOM) {
      this.ox = 0;
      this.oy = 0;
    }
  }

  /** Logical point → canvas CSS pixels. */
  toCanvas(x, y) {
    return { x: x * this.scaleX - this.ox, y: y * this.scaleY - this.oy };
  }

  /** Canvas CSS pixels → logical point (unclamped). */
  fromCanvas(cx, cy) {
    return { x: (cx + this.ox) / this.scaleX, y: (cy + this.oy) / this.scaleY };
  }

  /** Pans so that the logical point (x, y) is at canvas CSS pixel (cx, cy), as far as allowed. */
  place(x, y, cx, cy) {
    this.ox = x * this.scaleX - cx;
    this.oy = y * this.scaleY - cy;
    this.clamp();
  }
}

const isTextTarget = (t) => t instanceof Element && t.closest('input, textarea, select, [contenteditable], dialog');

/**
 * Wires the zoom/pan controls to the board.
 * @param {{ board: import('./board.js').Board, stage: HTMLElement, canvas: HTMLCanvasElement,
 *           zoomIn: HTMLButtonElement, zoomOut: HTMLButtonElement, fit: HTMLButtonElement,
 *           label: HTMLElement, toggle: HTMLElement, doc?: Document }} opts
 * `toggle` is the compact layout's button that opens the zoom pop-over: it shows the zoom too.
 */
export function attachView({ board, stage, canvas, zoomIn, zoomOut, fit, label, toggle, doc = document }) {
  const centre = () => {
    const r = canvas.getBoundingClientRect();
    return [r.left + r.width / 2, r.top + r.height / 2];
  };
  const zoomBy = (factor) => board.zoomAt(board.zoom * factor, ...centre());

  zoomIn.addEventListener('click', () => zoomBy(STEP));
  zoomOut.addEventListener('click', () => zoomBy(1 / STEP));
  fit.addEventListener('click', () => board.fit());

  const show = () => {
    const z = board.zoom;
    label.textContent = `${Math.round(z * 100)}%`;
    toggle.textContent = label.textContent;
    toggle.setAttribute('aria-label', `Zoom ${label.textContent}`); // the name holds what it shows
    zoomOut.disabled = z <= MIN_ZOOM;
    fit.disabled = z <= MIN_ZOOM;
    zoomIn.disabled = z >= MAX_ZOOM;
    canvas.dataset.zoom = String(Math.round(z * 1000) / 1000);
  };
  board.addEventListener('view', show);
  show();

  // ---- wheel: Ctrl/Cmd (or a trackpad pinch) zooms around the pointer; otherwise pans when zoomed
  stage.addEventListener(
    'wheel',
    (e) => {
      const unit = e.deltaMode === 1 ? LINE_PX : e.deltaMode === 2 ? canvas.clientHeight : 1;
      if (e.ctrlKey || e.metaKey) {
        e.preventDefault(); // not the browser's page zoom
        board.zoomAt(board.zoom * Math.exp(-e.deltaY * unit * WHEEL_ZOOM_PER_PX), e.clientX, e.clientY, {
          interactive: true,
        });
        return;
      }
      if (board.zoom <= MIN_ZOOM) return;
      e.preventDefault();
      const dx = (e.shiftKey && !e.deltaX ? e.deltaY : e.deltaX) * unit;
      const dy = (e.shiftKey && !e.deltaX ? 0 : e.deltaY) * unit;
      board.panBy(dx, dy, { interactive: true });
    },
    { passive: false },
  );

  // ---- keys: + / - / 0, unless typing or a dialog is open
  doc.addEventListener('keydown', (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.defaultPrevented) return;
    if (isTextTarget(e.target) || doc.querySelector('dialog[open]')) return;
    switch (e.key) {
      case '+':
      case '=':
        zoomBy(STEP);
        break;
      case '-':
      case '_':
        zoomBy(1 / STEP);
        break;
      case '0':
        board.fit();
        break;
      default:
        return;
    }
    e.preventDefault();
  });

  // ---- touch: two fingers pinch-zoom around their midpoint and pan (input.js leaves them alone)
  const touches = new Map(); // pointerId → {x, y}
  let pinch = null; // { zoom, dist, anchor: logical point under the starting midpoint }
  const twoFingers = () => {
    const [a, b] = [...touches.values()];
    return { mid: [(a.x + b.x) / 2, (a.y + b.y) / 2], dist: Math.hypot(a.x - b.x, a.y - b.y) };
  };
  canvas.addEventListener('pointerdown', (e) => {
    if (e.pointerType !== 'touch') return;
    touches.set(e.pointerId, { x: e.clientX, y: e.clientY });
    if (touches.size === 2) {
      const { mid, dist } = twoFingers();
      pinch = { zoom: board.zoom, dist: Math.max(1, dist), anchor: board.toBoard(...mid) };
    } else {
      pinch = null; // a third finger: stop until fewer fingers are down
    }
  });
  canvas.addEventListener('pointermove', (e) => {
    const t = touches.get(e.pointerId);
    if (!t) return;
    t.x = e.clientX;
    t.y = e.clientY;
    if (!pinch || touches.size !== 2) return;
    const { mid, dist } = twoFingers();
    board.zoomAt(pinch.zoom * (dist / pinch.dist), mid[0], mid[1], { anchor: pinch.anchor, interactive: true });
  });
  const lift = (e) => {
    if (!touches.delete(e.pointerId)) return;
    pinch = null;
  };
  canvas.addEventListener('pointerup', lift);
  canvas.addEventListener('pointercancel', lift);
}
