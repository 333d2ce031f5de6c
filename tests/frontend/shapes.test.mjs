// Unit tests of frontend/shapes.js and the pure parts of frontend/text.js (run by
// `node --test tests/frontend/`, and by tests/frontend_unit.rs under `cargo test`).
import test from 'node:test';
import assert from 'node:assert/strict';
import { toShape, outline, arrowHead, arrowHeadLength, constrain, ARROW_HEAD_ANGLE_RAD } from '../../frontend/shapes.js';
import { toText, isSendableText, fontSizeFor } from '../../frontend/text.js';

const shape = (kind, x1, y1, x2, y2, extra = {}) => ({ type: 'shape', shape: kind, x1, y1, x2, y2, color: '#112233', size: 4, fill: null, ...extra });

test('a relayed shape keeps its corners and fill; a fill on a line or arrow is dropped', () => {
  assert.deepEqual(toShape(shape('rect', 1, 2, 3, 4, { fill: '#abcdef' })), shape('rect', 1, 2, 3, 4, { fill: '#abcdef' }));
  assert.equal(toShape(shape('line', 1, 2, 3, 4, { fill: '#abcdef' })).fill, null);
  assert.equal(toShape(shape('star', 1, 2, 3, 4)), null);
  assert.equal(toShape(shape('rect', 1, 2, NaN, 4)), null);
  assert.equal(toShape({ ...shape('rect', 1, 2, 3, 4), size: 500 }).size, 64);
});

test('an arrow head is proportional to the width, never under 12 px, and points back along the shaft', () => {
  assert.equal(arrowHeadLength(1), 12);
  assert.equal(arrowHeadLength(10), 40);
  const [left, right] = arrowHead(shape('arrow', 0, 50, 100, 50, { size: 10 }));
  for (const [x, y] of [left, right]) {
    assert.ok(Math.abs(x - (100 - 40 * Math.cos(ARROW_HEAD_ANGLE_RAD))) < 1e-9);
    assert.ok(Math.abs(Math.abs(y - 50) - 40 * Math.sin(ARROW_HEAD_ANGLE_RAD)) < 1e-9);
  }
  assert.ok(left[1] !== right[1]);
});

test('a flat box is a line, a point a dot, a rectangle a closed path (as the server draws them)', () => {
  assert.deepEqual(outline(shape('ellipse', 10, 10, 90, 10)), { parts: [['move', 10, 10], ['line', 90, 10]], closed: false });
  assert.deepEqual(outline(shape('rect', 10, 10, 10, 10)), { dot: [10, 10, 2] });
  assert.equal(outline(shape('rect', 10, 10, 30, 40)).closed, true);
  assert.deepEqual(outline(shape('ellipse', 10, 10, 30, 50)).parts, [['ellipse', 20, 30, 10, 20]]);
});

test('Shift makes lines horizontal or vertical and boxes square, toward the pointer', () => {
  const from = { x: 100, y: 100 };
  assert.deepEqual(constrain('line', from, { x: 180, y: 120 }), { x: 180, y: 100 });
  assert.deepEqual(constrain('arrow', from, { x: 110, y: 20 }), { x: 100, y: 20 });
  assert.deepEqual(constrain('rect', from, { x: 130, y: 40 }), { x: 160, y: 40 });
  assert.deepEqual(constrain('ellipse', from, { x: 70, y: 110 }), { x: 70, y: 130 });
});

test('a text is 1-500 characters without control characters, its size 8-200', () => {
  assert.ok(isSendableText('Hello'));
  assert.ok(!isSendableText(''));
  assert.ok(!isSendableText('a\nb'));
  assert.ok(!isSendableText('x'.repeat(501)));
  assert.ok(isSendableText('😀'.repeat(500)), 'characters, not UTF-16 units');
  assert.deepEqual(toText({ type: 'text', x: 1, y: 2, text: 'Hi', color: '#000', size: 300 }), { type: 'text', x: 1, y: 2, text: 'Hi', color: '#000', size: 200 });
  assert.equal(toText({ type: 'text', x: 1, y: 2, text: 3, color: '#000', size: 20 }), null);
  assert.equal(fontSizeFor(1), 8);
  assert.equal(fontSizeFor(4), 16);
  assert.equal(fontSizeFor(64), 200);
});
