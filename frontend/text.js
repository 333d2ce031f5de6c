// text.js — owns what a `text` is on the page: checking a relayed one, painting it in the font the
// server ships (frontend/fonts/DejaVuSans.ttf, declared with @font-face in style.css), and the
// text box one types into in place. A text's (x, y) is the top-left of its line box; its baseline is
// the font's ascent below, as the server's src/lettering.rs places it. Kerning and ligatures are off
// on both sides, so a text is as wide here as in canvas.png.
// It must never paint with a fallback font when the shipped one could still load: the first text
// painted asks for the font (requestFont) and the page re-paints once it is there.

export const FONT_FAMILY = 'LiveCanvasSans';
/** DejaVu Sans's ascent over its em (hhea ascender 1901, 2048 units per em); src/lettering.rs checks it. */
export const ASCENT_PER_EM = 1901 / 2048;
export const MIN_FONT_SIZE = 8;
export const MAX_FONT_SIZE = 200;
export const MAX_TEXT_CHARS = 500;
const COLOR_RE = /^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$/;
// Control characters (C0, DEL, C1): what the server refuses in a text.
const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f]/;

/** The font size a text gets for a brush size (1-64): four times it, within 8-200. */
export function fontSizeFor(brushSize) {
  return Math.min(MAX_FONT_SIZE, Math.max(MIN_FONT_SIZE, Math.round(brushSize * 4)));
}

/** Whether the server takes `text` as a text's content: 1-500 characters, no control characters. */
export function isSendableText(text) {
  const chars = [...text].length;
  return chars >= 1 && chars <= MAX_TEXT_CHARS && !CONTROL_RE.test(text);
}

/** A relayed text message as an op for the board, or null if it is not a usable text. */
export function toText(msg) {
  const { x, y } = msg;
  if (![x, y].every(Number.isFinite) || typeof msg.text !== 'string' || !isSendableText(msg.text)) return null;
  const color = typeof msg.color === 'string' && COLOR_RE.test(msg.color) ? msg.color : '#000000';
  const size = Number.isFinite(msg.size) ? Math.min(MAX_FONT_SIZE, Math.max(MIN_FONT_SIZE, msg.size)) : 16;
  return { type: 'text', x, y, text: msg.text, color, size };
}

export function cssFont(size) {
  return `${size}px ${FONT_FAMILY}, sans-serif`;
}

const fontEvents = new EventTarget();
let fontRequested = false;

/**
 * Fetches the shipped font the first time a text is painted, not with the page: it is most of the
 * page's weight, and most boards have no text. `onFontLoaded` callbacks run once canvases can use it.
 */
function requestFont() {
  if (fontRequested || typeof document === 'undefined') return;
  fontRequested = true;
  loadFont(document).then((loaded) => {
    if (loaded) fontEvents.dispatchEvent(new Event('loaded'));
  });
}

/** Calls `listener` once the shipped font has arrived (texts painted before it used a fallback). */
export function onFontLoaded(listener) {
  fontEvents.addEventListener('loaded', listener);
}

/** Paints a text op with the transform (a, 0, 0, d, e, f) from logical to canvas pixels. */
export function paintText(ctx, t, a, d, e = 0, f = 0) {
  requestFont();
  ctx.save();
  ctx.setTransform(a, 0, 0, d, e, f);
  ctx.globalCompositeOperation = 'source-over';
  ctx.fillStyle = t.color;
  ctx.font = cssFont(t.size);
  ctx.textAlign = 'left';
  ctx.textBaseline = 'alphabetic';
  if ('fontKerning' in ctx) ctx.fontKerning = 'none';
  if ('textRendering' in ctx) ctx.textRendering = 'optimizeSpeed'; // no ligatures either
  ctx.fillText(t.text, t.x, t.y + ASCENT_PER_EM * t.size);
  ctx.restore();
}

/** Loads the shipped font (declared in style.css); resolves true once canvases can use it. */
export async function loadFont(doc = document) {
  if (!doc.fonts || typeof doc.fonts.load !== 'function') return false;
  try {
    const faces = await doc.fonts.load(`16px ${FONT_FAMILY}`);
    return faces.length > 0;
  } catch {
    return false;
  }
}

/**
 * Opens a text box at logical point `at` over the stage, in the text's font and size at the
 * board's current scale: Enter or leaving it commits (`onCommit(text)`), Escape or leaving it
 * empty cancels. Call it from the pointer event that asked for it: it takes the focus at once, so
 * that a phone shows its keyboard. Returns a function that commits what was typed and closes it.
 */
export function openTextBox({ stage, board, at, color, size, onCommit }) {
  const input = document.createElement('input');
  input.type = 'text';
  input.className = 'text-box';
  input.maxLength = MAX_TEXT_CHARS;
  input.setAttribute('aria-label', 'Text to place on the board (Enter to place, Escape to cancel)');
  input.autocomplete = 'off';
  input.spellcheck = false;
  stage.append(input);
  const place = () => {
    const p = board.toScreen(at.x, at.y);
    const origin = stage.getBoundingClientRect();
    input.style.left = `${p.x - origin.left}px`;
    input.style.top = `${p.y - origin.top}px`;
    input.style.font = cssFont(size * board.displayScale);
    input.style.color = color;
  };
  place();
  board.addEventListener('view', place);
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    board.removeEventListener('view', place);
    input.remove();
  };
  const commit = () => {
    if (closed) return;
    const text = input.value;
    close();
    if (text.trim() !== '' && isSendableText(text)) onCommit(text);
  };
  input.addEventListener('keydown', (e) => {
    e.stopPropagation(); // typed letters are not tool shortcuts
    if (e.key === 'Enter') {
      e.preventDefault();
      commit();
    } else if (e.key === 'Escape') {
      e.preventDefault();
      close();
    }
  });
  // Clicking elsewhere places what was typed, as in other whiteboards.
  input.addEventListener('blur', commit);
  // The board's pointerdown is default-prevented, so no mousedown takes this focus away.
  input.focus();
  return commit;
}
