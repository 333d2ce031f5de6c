// Where the page finds a private room's token and how it presents it: never in a request line.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { tokenFromLocation } from '../../frontend/private.js';
import { upgradeProtocols } from '../../frontend/connection.js';

function fakeHistory() {
  return {
    state: null,
    replaced: [],
    replaceState(state, title, url) {
      this.replaced.push(url);
    },
  };
}

test('a token in the fragment is read and the address is left alone', () => {
  const history = fakeHistory();
  const token = tokenFromLocation({ pathname: '/r/abc', search: '', hash: '#token=T0k-en_1' }, history);
  assert.equal(token, 'T0k-en_1');
  assert.deepEqual(history.replaced, []);
});

test('an old link moves its token from the query into the fragment', () => {
  const history = fakeHistory();
  const token = tokenFromLocation({ pathname: '/r/abc', search: '?token=T0k&x=1', hash: '' }, history);
  assert.equal(token, 'T0k');
  assert.deepEqual(history.replaced, ['/r/abc?x=1#token=T0k']);
});

test('a page without a token has none', () => {
  const history = fakeHistory();
  assert.equal(tokenFromLocation({ pathname: '/r/abc', search: '', hash: '' }, history), null);
  assert.equal(tokenFromLocation({ pathname: '/', search: '?token=', hash: '#x' }, history), null);
  assert.deepEqual(history.replaced, []);
});

test('secrets are offered as subprotocols after the plain one', () => {
  assert.deepEqual(upgradeProtocols(), ['livecanvas']);
  assert.deepEqual(upgradeProtocols({ token: 'T', author: 'A'.repeat(16) }), [
    'livecanvas',
    'livecanvas.token.T',
    `livecanvas.author.${'A'.repeat(16)}`,
  ]);
});
