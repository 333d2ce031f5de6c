// figures.js — owns pointer input for the shape and text tools (input.js owns the pen's): a drag
// draws a line, rectangle, ellipse or arrow with a live preview on an overlay canvas over #board
// (Shift constrains it, see shapes.js), released it becomes one `shape` operation; a tap with
// the text tool opens a text box there (text.js). Coordinates are logical (board.toLogical), so
// zoom and touch work as for the pen. A second finger landing (a pinch) drops the shape being
// dragged. It must never send anything for a drag it dropped, nor when the page may not draw.

import { isShapeKind, isFillable, constrain, paintShape } from './shapes.js';
import { fontSizeFor, openTextBox } from './text.js';

export const isFigureTool = (tool) => isShapeKind(tool) || tool === 'text';

/**
 * @param {{ board, canvas: HTMLCanvasElement, stage: HTMLElement, brush: () => object,
 *           onFigure: (op: object) => void, newStrokeId: () => string, canDraw: () => boolean }} opts
 */
export function attachFigures({ board, canvas, stage, brush, onFigure, newStrokeId, canDraw }) {
  const overlay = document.createElement('canvas');
  overlay.className = 'figure-preview';
  overlay.setAttribute('aria-hidden', 'true');
  stage.append(overlay);
  const octx = overlay.getContext('2d');
  let drag = null; // { pointerId, from, to, brush, shift }
  let commitTextBox = null; // the open text box's, if one is open
  const touches = new Set();

  const fitOverlay = () => {
    const r = canvas.getBoundingClientRect();
    const origin = stage.getBoundingClientRect();
    overlay.style.left = `${r.left - origin.left + canvas.clientLeft}px`;
    overlay.style.top = `${r.top - origin.top + canvas.clientTop}px`;
    overlay.style.width = canvas.style.width;
    overlay.style.height = canvas.style.height;
    if (overlay.width !== canvas.width) overlay.width = canvas.width;
    if (overlay.height !== canvas.height) overlay.height = canvas.height;
  };

  const shapeOf = (d) => {
    const to = d.shift ? constrain(d.brush.tool, d.from, d.to) : d.to;
    return {
      type: 'shape',
      shape: d.brush.tool,
      x1: d.from.x,
      y1: d.from.y,
      x2: Math.round(to.x * 10) / 10,
      y2: Math.round(to.y * 10) / 10,
      color: d.brush.color,
      size: d.brush.size,
      fill: d.brush.fill && isFillable(d.brush.tool) ? d.brush.color : null,
    };
  };

  const preview = () => {
    octx.setTransform(1, 0, 0, 1, 0, 0);
    octx.clearRect(0, 0, overlay.width, overlay.height);
    if (!drag) return;
    const [a, d, e, f] = board.visibleTransform();
    paintShape(octx, shapeOf(drag), a, d, e, f);
  };
  board.addEventListener('view', () => {
    fitOverlay();
    preview();
  });
  fitOverlay();

  const drop = () => {
    drag = null;
    preview();
  };

  canvas.addEventListener('pointerdown', (e) => {
    const b = brush();
    if (!isFigureTool(b.tool) || (e.button !== 0 && e.button !== 5) || !canDraw()) return;
    e.preventDefault();
    if (e.pointerType === 'touch') {
      touches.add(e.pointerId);
      if (touches.size > 1) return drop(); // a pinch: view.js zooms
    }
    const at = board.toLogical(e.clientX, e.clientY);
    if (b.tool === 'text') {
      // A tap elsewhere places the text being typed, and starts another.
      if (commitTextBox) commitTextBox();
      const size = fontSizeFor(b.size);
      commitTextBox = openTextBox({
        stage,
        board,
        at,
        color: b.color,
        size,
        onCommit: (text) => onFigure({ type: 'text', x: at.x, y: at.y, text, color: b.color, size, strokeId: newStrokeId() }),
      });
      return;
    }
    try {
      canvas.setPointerCapture(e.pointerId);
    } catch {
      // Without capture the drag still works while the pointer stays over the board.
    }
    fitOverlay();
    drag = { pointerId: e.pointerId, from: at, to: at, brush: b, shift: e.shiftKey };
    preview();
  });

  canvas.addEventListener('pointermove', (e) => {
    if (!drag || drag.pointerId !== e.pointerId) return;
    drag.to = board.toLogical(e.clientX, e.clientY);
    drag.shift = e.shiftKey;
    preview();
  });

  canvas.addEventListener('pointerup', (e) => {
    touches.delete(e.pointerId);
    if (!drag || drag.pointerId !== e.pointerId) return;
    drag.to = board.toLogical(e.clientX, e.clientY);
    drag.shift = e.shiftKey;
    const op = shapeOf(drag);
    drop();
    onFigure({ ...op, strokeId: newStrokeId() });
  });

  const cancel = (e) => {
    touches.delete(e.pointerId);
    if (drag && drag.pointerId === e.pointerId) drop();
  };
  canvas.addEventListener('pointercancel', cancel);
  // Capture lost before the pointer came up (pointerup commits first): the drag is dropped.
  canvas.addEventListener('lostpointercapture', cancel);
  // Shift pressed or released mid-drag changes the preview at once.
  for (const type of ['keydown', 'keyup']) {
    document.addEventListener(type, (e) => {
      if (drag && e.key === 'Shift') {
        drag.shift = type === 'keydown';
        preview();
      }
    });
  }
}
