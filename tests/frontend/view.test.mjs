// Unit tests of the view arithmetic in frontend/view.js (ViewTransform; no DOM needed).
import test from 'node:test';
import assert from 'node:assert/strict';
import { ViewTransform, MAX_ZOOM } from '../../frontend/view.js';

const layout = { logicalW: 1600, logicalH: 900, fitW: 1248, fitH: 702, availW: 1248, availH: 740 };

test('at fit the canvas is the fitted size and maps like the board always did', () => {
  const v = new ViewTransform();
  v.setLayout(layout);
  assert.equal(v.canvasW, 1248);
  assert.equal(v.canvasH, 702);
  assert.deepEqual(v.toCanvas(1600, 900), { x: 1248, y: 702 });
  assert.deepEqual(v.toCanvas(0, 0), { x: 0, y: 0 });
});

test('zoom is clamped to [1, MAX_ZOOM], and snaps to fit', () => {
  const v = new ViewTransform();
  v.setLayout(layout);
  v.setZoom(100);
  assert.equal(v.zoom, MAX_ZOOM);
  v.setZoom(0.2);
  assert.equal(v.zoom, 1);
  v.setZoom(1.0004);
  assert.equal(v.zoom, 1);
  v.setZoom(NaN);
  assert.equal(v.zoom, 1);
});

test('zoomed, the canvas fills the available area and the pan stays within the board', () => {
  const v = new ViewTransform();
  v.setLayout(layout);
  v.setZoom(4);
  assert.equal(v.canvasW, 1248);
  assert.equal(v.canvasH, 740);
  v.ox = -50;
  v.oy = 1e9;
  v.clamp();
  assert.equal(v.ox, 0);
  assert.equal(v.oy, 702 * 4 - 740);
  // Back at fit the offsets are gone.
  v.setZoom(1);
  assert.deepEqual([v.ox, v.oy], [0, 0]);
});

test('place puts a logical point under a canvas point, and fromCanvas inverts toCanvas', () => {
  const v = new ViewTransform();
  v.setLayout(layout);
  v.setZoom(3);
  v.place(800, 450, 600, 370);
  const c = v.toCanvas(800, 450);
  assert.ok(Math.abs(c.x - 600) < 1e-9 && Math.abs(c.y - 370) < 1e-9, JSON.stringify(c));
  const p = v.fromCanvas(123, 45);
  const back = v.toCanvas(p.x, p.y);
  assert.ok(Math.abs(back.x - 123) < 1e-9 && Math.abs(back.y - 45) < 1e-9);
});

test('a stage the fitted board covers half of or more opens at fit', () => {
  const v = new ViewTransform();
  v.setLayout(layout); // a desktop: 1248x702 of 1248x740
  v.start();
  assert.equal(v.zoom, 1);
  assert.deepEqual([v.ox, v.oy], [0, 0]);
});

test('a stage the fitted board covers less than half of opens zoomed to fill it, centred', () => {
  const v = new ViewTransform();
  // A phone held upright: the 16:9 board fits 390x219 of a 390x732 stage (30%).
  v.setLayout({ logicalW: 1600, logicalH: 900, fitW: 390, fitH: 219, availW: 390, availH: 732 });
  assert.ok(v.fitW * v.fitH < 0.5 * v.availW * v.availH);
  v.start();
  assert.ok(Math.abs(v.zoom - 732 / 219) < 1e-9, `zoom ${v.zoom}`);
  assert.equal(v.canvasW, 390);
  assert.equal(v.canvasH, 732);
  const middle = v.toCanvas(800, 450);
  assert.ok(Math.abs(middle.x - 195) < 1 && Math.abs(middle.y - 366) < 1, JSON.stringify(middle));
});
