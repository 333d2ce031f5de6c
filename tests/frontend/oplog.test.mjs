// Unit tests of frontend/oplog.js (run by `node --test tests/frontend/`, and by
// tests/frontend_unit.rs under `cargo test`).
import test from 'node:test';
import assert from 'node:assert/strict';
import { OpLog } from '../../frontend/oplog.js';

const draw = (strokeId, x = 0) => ({ type: 'draw', startX: x, startY: 0, endX: x, endY: 0, size: 2, color: '#000000', tool: 'pen', strokeId });
const clear = (strokeId) => ({ type: 'clear', strokeId });

test('setHidden hides every op of the stroke, and says where the first one and the first change are', () => {
  const log = new OpLog();
  log.push(draw('a', 1));
  log.push(draw('b', 2));
  log.push(draw('a', 3));
  assert.deepEqual(log.setHidden('a', true), { first: 0, changed: 0 });
  assert.deepEqual(log.visibleOps().map((o) => o.startX), [2]);
  // Hiding again changes nothing, but the stroke is still there.
  assert.deepEqual(log.setHidden('a', true), { first: 0, changed: -1 });
  assert.deepEqual(log.setHidden('a', false), { first: 0, changed: 0 });
  assert.deepEqual(log.visibleOps().map((o) => o.startX), [1, 2, 3]);
});

test('an unknown or missing stroke id matches nothing', () => {
  const log = new OpLog();
  log.push({ type: 'draw', startX: 1, startY: 1, endX: 1, endY: 1 });
  assert.deepEqual(log.setHidden('x', true), { first: -1, changed: -1 });
  assert.deepEqual(log.setHidden(undefined, true), { first: -1, changed: -1 });
  assert.equal(log.hasStroke(undefined), false);
  assert.equal(log.hasStroke('x'), false);
  assert.equal(log.visibleOps().length, 1);
});

test('hasStroke', () => {
  const log = new OpLog();
  log.push(draw(7));
  assert.equal(log.hasStroke(7), true);
  assert.equal(log.hasStroke('7'), false);
});

test('the replay starts after the last visible clear, and a hidden clear does not count', () => {
  const log = new OpLog();
  log.push(draw('a'));
  log.push(clear('c'));
  log.push(draw('b'));
  assert.equal(log.lastVisibleClear(), 1);
  assert.deepEqual(log.replayPlan(), { from: 2, start: 'blank' });
  log.setHidden('c', true);
  assert.equal(log.lastVisibleClear(), -1);
  assert.deepEqual(log.replayPlan(), { from: 0, start: 'base' });
  // Only clears before `end` count.
  log.setHidden('c', false);
  assert.deepEqual(log.replayPlan(1), { from: 0, start: 'base' });
});

test('a cached prefix is used unless a later visible clear makes it moot', () => {
  const log = new OpLog();
  for (let i = 0; i < 5; i++) log.push(draw('s' + i, i));
  assert.deepEqual(log.replayPlan(5, 3), { from: 3, start: 'cached' });
  log.push(clear('c'));
  log.push(draw('t'));
  assert.deepEqual(log.replayPlan(7, 3), { from: 6, start: 'blank' });
  // A clear before the cached index is inside the cached picture already.
  const log2 = new OpLog();
  log2.push(clear('c'));
  log2.push(draw('a'));
  log2.push(draw('b'));
  assert.deepEqual(log2.replayPlan(3, 2), { from: 2, start: 'cached' });
  assert.deepEqual(log2.replayPlan(3, 1), { from: 1, start: 'blank' });
});

test('folding returns the visible oldest ops in order and drops hidden ones', () => {
  const log = new OpLog();
  log.push(draw('a', 1));
  log.push(draw('b', 2));
  log.push(draw('a', 3));
  log.push(draw('c', 4));
  log.setHidden('b', true);
  const folded = log.foldOldest(3);
  assert.deepEqual(folded.map((o) => o.startX), [1, 3]);
  assert.equal(log.length, 1);
  // A stroke folded away can no longer be hidden.
  assert.equal(log.hasStroke('a'), false);
  assert.deepEqual(log.setHidden('a', true), { first: -1, changed: -1 });
  assert.deepEqual(log.foldOldest(10).map((o) => o.startX), [4]);
  assert.equal(log.length, 0);
});
