// brush-outline.js — owns the canvas's own pointer, the brush outline (other people's pointers
// are cursors.js): a circle showing the brush's on-screen size (an SVG data URL, allowed by
// `img-src data:`), or a crosshair when it would be too small/big.

const MIN_DIAMETER = 6;
const MAX_CURSOR = 128; // browsers ignore larger cursor images

export function updateCursor(canvas, { size, tool }, displayScale) {
  const d = Math.round(size * displayScale);
  if (d < MIN_DIAMETER || d + 4 > MAX_CURSOR) {
    canvas.style.cursor = tool === 'eraser' ? 'cell' : 'crosshair';
    return;
  }
  const box = d + 4;
  const c = box / 2;
  const r = d / 2;
  const dash = tool === 'eraser' ? " stroke-dasharray='3 2'" : '';
  const svg =
    `<svg xmlns='http://www.w3.org/2000/svg' width='${box}' height='${box}'>` +
    `<circle cx='${c}' cy='${c}' r='${r}' fill='none' stroke='white' stroke-width='3' stroke-opacity='0.8'/>` +
    `<circle cx='${c}' cy='${c}' r='${r}' fill='none' stroke='black' stroke-width='1'${dash}/>` +
    `</svg>`;
  const hot = Math.floor(c);
  canvas.style.cursor = `url("data:image/svg+xml,${encodeURIComponent(svg)}") ${hot} ${hot}, crosshair`;
}
