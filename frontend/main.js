// main.js — wiring only: finds the page's elements, builds the modules and connects their events.

import { roomFromPath, wsUrl } from './room.js';
import { Board } from './board.js';
import { attachInput } from './input.js';
import { updateCursor } from './cursor.js';
import { Connection } from './connection.js';
import { Sync } from './sync.js';
import { Toolbar } from './toolbar.js';
import { createStatus } from './status.js';
import { setupClear, setupDownload, setupRoomSwitch, setupShare } from './actions.js';
import { setupNames } from './names.js';
import { createPresence } from './presence.js';
import { createCursors } from './cursors.js';

const $ = (id) => document.getElementById(id);

const room = roomFromPath(location.pathname);
document.title = room === 'main' ? 'livecanvas' : `${room} · livecanvas`;
$('room-label').textContent = room;

const status = createStatus({
  statusEl: $('status'),
  peopleEl: $('people'),
  noticeEl: $('notice'),
  toastHost: $('toasts'),
});

const canvas = $('board');
const board = new Board(canvas, $('stage'));
const toolbar = new Toolbar(document);
const connection = new Connection(wsUrl(room));
const sync = new Sync({
  board,
  send: (msg) => connection.send(msg),
  onSynced: (synced) => status.setSynced(synced),
});

const refreshCursor = () => updateCursor(canvas, toolbar.brush, board.displayScale);
board.onLayout = refreshCursor;
toolbar.addEventListener('change', refreshCursor);
refreshCursor();

attachInput(canvas, {
  toLogical: (x, y) => board.toLogical(x, y),
  brush: () => toolbar.brush,
  onSegment: (seg) => sync.local(seg),
});

setupClear({
  button: $('clear'),
  dialog: $('clear-dialog'),
  confirmButton: $('clear-confirm'),
  cancelButton: $('clear-cancel'),
  onConfirm: () => sync.local({ type: 'clear' }),
});
setupDownload({ button: $('download'), board, room, toast: status.toast });
setupRoomSwitch({ form: $('room-form'), input: $('room-input'), room, toast: status.toast });
setupShare({ button: $('share'), urlField: $('share-url'), room, toast: status.toast });

const names = setupNames({
  dialog: $('name-dialog'),
  form: $('name-form'),
  input: $('name-input'),
  skipButton: $('name-skip'),
  error: $('name-error'),
  send: (msg) => connection.send(msg),
});
const presence = createPresence({ listEl: $('members'), toggleEl: $('people'), onRenameSelf: () => names.open() });
const cursors = createCursors({ board, canvas, stage: $('stage'), presence, send: (msg) => connection.send(msg) });
names.askIfNew();

connection.addEventListener('state', (e) => status.setConnection(e.detail));
connection.addEventListener('close', () => {
  sync.disconnected();
  names.disconnected();
  cursors.clear();
});
connection.addEventListener('message', (e) => {
  const msg = e.detail;
  // A batch frame carries ordinary messages, in order.
  if (msg.type === 'batch' && Array.isArray(msg.messages)) {
    for (const inner of msg.messages) {
      if (inner && typeof inner === 'object') handleMessage(inner);
    }
  } else {
    handleMessage(msg);
  }
});

function handleMessage(msg) {
  switch (msg.type) {
    case 'welcome':
      sync.welcome(msg);
      presence.welcomed(msg.clientId);
      names.welcomed();
      break;
    case 'presence':
      presence.update(msg);
      cursors.prune();
      break;
    case 'cursor':
      cursors.move(msg);
      break;
    case 'clientCount':
      if (Number.isInteger(msg.clientCount) && msg.clientCount >= 0) status.setPeople(msg.clientCount);
      break;
    case 'draw':
    case 'clear':
      sync.remote(msg);
      break;
    case 'canvasRequest':
      sync.request(msg);
      break;
    case 'canvasState':
      sync.snapshot(msg);
      break;
    case 'canvasEmpty':
      sync.empty(msg);
      break;
    case 'error':
      status.toast(typeof msg.message === 'string' && msg.message ? msg.message : `Error: ${msg.code ?? 'unknown'}`, 'error');
      break;
    default:
      break; // unknown messages are ignored, for forward compatibility
  }
}
// Leaving the page (or entering the back/forward cache) closes the socket; coming back reconnects.
window.addEventListener('pagehide', () => connection.suspend());
window.addEventListener('pageshow', (e) => {
  if (e.persisted) connection.resume();
});
window.addEventListener('online', () => status.setConnection(connection.state));
window.addEventListener('offline', () => status.setConnection(connection.state));

connection.start();
