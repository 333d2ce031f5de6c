// main.js — wiring only: finds the page's elements, builds the modules and connects their events.

import { roomFromPath, wsUrl } from './room.js';
import { Board } from './board.js';
import { attachInput } from './input.js';
import { attachView } from './view.js';
import { updateCursor } from './brush-outline.js';
import { Connection, upgradeProtocols } from './connection.js';
import { Sync } from './sync.js';
import { Toolbar } from './toolbar.js';
import { createStatus } from './status.js';
import { setupClear, setupDownload, setupRoomSwitch, setupShare } from './actions.js';
import { authorSecret, newStrokeId } from './author.js';
import { UndoHistory, setupUndo } from './undo.js';
import { PrivateRoom, rememberLinks, setupNewPrivateRoom, setupPrivateShare, tokenFromLocation } from './private.js';
import { setupNames } from './names.js';
import { createPresence } from './presence.js';
import { createCursors } from './cursors.js';
import { createModeration } from './moderation.js';
import { attachFigures, isFigureTool } from './figures.js';
import { onFontLoaded } from './text.js';

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
const token = tokenFromLocation();
const privateRoom = new PrivateRoom({ token, badge: $('view-only') });
const connection = new Connection(wsUrl(room, location), {
  protocols: upgradeProtocols({ token, author: authorSecret() }),
});
const sync = new Sync({
  board,
  send: (msg) => connection.send(msg),
  onSynced: (synced) => {
    status.setSynced(synced);
    // Undo and redo wait for the picture and for what was drawn offline to be sent.
    undoHistory.setOnline(synced);
  },
});

const undoHistory = new UndoHistory({
  room,
  perform: (msg) => sync.local(msg),
  show: (strokeId, hidden) => board.setHidden(strokeId, hidden),
});
setupUndo({ history: undoHistory, undoButton: $('undo'), redoButton: $('redo') });

const refreshCursor = () => {
  const brush = toolbar.brush;
  if (isFigureTool(brush.tool)) canvas.style.cursor = brush.tool === 'text' ? 'text' : 'crosshair';
  else updateCursor(canvas, brush, board.displayScale);
};
board.addEventListener('view', refreshCursor);
toolbar.addEventListener('change', refreshCursor);
refreshCursor();

attachInput(canvas, {
  toLogical: (x, y) => board.toLogical(x, y),
  brush: () => toolbar.brush,
  onSegment: (seg) => {
    sync.local(seg);
    undoHistory.drew(seg.strokeId);
  },
  newStrokeId,
  canDraw: () => privateRoom.canDraw() && moderation.canDraw() && !isFigureTool(toolbar.brush.tool),
});

attachFigures({
  board,
  canvas,
  stage: $('stage'),
  brush: () => toolbar.brush,
  onFigure: (op) => {
    sync.local(op);
    undoHistory.drew(op.strokeId);
  },
  newStrokeId,
  canDraw: () => privateRoom.canDraw() && moderation.canDraw(),
});
// Texts drawn before the shipped font arrived used a fallback: draw them again in it.
onFontLoaded(() => board.repaint());

attachView({
  board,
  stage: $('stage'),
  canvas,
  zoomIn: $('zoom-in'),
  zoomOut: $('zoom-out'),
  fit: $('zoom-fit'),
  label: $('zoom-level'),
  toggle: $('zoom-toggle'),
});
// A hook for the browser tests (and the console): the board and its API.
window.__livecanvas = { board };

setupClear({
  button: $('clear'),
  dialog: $('clear-dialog'),
  confirmButton: $('clear-confirm'),
  cancelButton: $('clear-cancel'),
  onConfirm: () => {
    const strokeId = newStrokeId();
    sync.local({ type: 'clear', strokeId });
    undoHistory.drew(strokeId);
  },
});
setupDownload({ button: $('download'), board, room, toast: status.toast });
setupRoomSwitch({ form: $('room-form'), input: $('room-input'), room, toast: status.toast });
if (privateRoom.isPrivate) {
  setupPrivateShare({
    button: $('share'),
    dialog: $('share-dialog'),
    editRow: $('share-edit'),
    viewRow: $('share-view'),
    note: $('share-note'),
    closeButton: $('share-close'),
    room,
    privateRoom,
    toast: status.toast,
  });
} else {
  setupShare({ button: $('share'), urlField: $('share-url'), room, toast: status.toast });
}
setupNewPrivateRoom({ button: $('new-private'), toast: status.toast });

const names = setupNames({
  form: $('name-form'),
  input: $('name-input'),
  error: $('name-error'),
  send: (msg) => connection.send(msg),
});
const presence = createPresence({ listEl: $('members'), toggleEl: $('people'), onRenameSelf: (shown, chip) => names.open(shown, chip) });
const cursors = createCursors({ board, canvas, stage: $('stage'), presence, send: (msg) => connection.send(msg) });

// Restore after someone else's clear, the room's lock, the owner's controls (see moderation.js).
const moderation = createModeration({
  room,
  token,
  perform: (msg) => sync.local(msg),
  show: (strokeId, hidden) => board.setHidden(strokeId, hidden),
  toast: status.toast,
  toastHost: $('toasts'),
  badgeAnchor: $('view-only'),
  ownerAnchor: $('share'),
  members: () => presence.list(),
  selfId: () => presence.selfId,
  onLinks: (links) => rememberLinks(room, links),
});

connection.addEventListener('state', (e) => status.setConnection(e.detail));
connection.addEventListener('close', (e) => {
  if (moderation.stops(e.detail)) {
    connection.suspend();
    status.setConnection('stopped');
  }
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
      privateRoom.welcome(msg);
      moderation.welcome(msg);
      sync.welcome(msg);
      presence.welcomed(msg.clientId);
      names.welcomed();
      break;
    case 'presence':
      presence.update(msg);
      cursors.prune();
      break;
    case 'presenceChange':
      presence.change(msg);
      cursors.prune();
      break;
    case 'cursor':
      cursors.move(msg);
      break;
    case 'clientCount':
      if (Number.isInteger(msg.clientCount) && msg.clientCount >= 0) {
        status.setPeople(msg.clientCount);
        presence.setTotal(msg.clientCount);
      }
      break;
    case 'draw':
    case 'shape':
    case 'text':
    case 'clear':
    case 'undo':
    case 'redo':
      sync.remote(msg);
      moderation.remote(msg);
      break;
    case 'locked':
      moderation.locked(msg);
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
      // A refused undo or redo names its stroke: put it back as it was.
      if (['not_yours', 'cannot_undo', 'read_only'].includes(msg.code) && typeof msg.strokeId === 'string') {
        undoHistory.refused(msg.strokeId);
        moderation.refused(msg.strokeId);
      }
      status.toast(typeof msg.message === 'string' && msg.message ? msg.message : `Error: ${msg.code ?? 'unknown'}`, 'error');
      break;
    default:
      break; // unknown messages are ignored, for forward compatibility
  }
}
// The compact layout's pop-overs are inline parts of the bars on a wide screen (style.css's media
// query): one left open while the window widens would float in the top layer, so close it.
matchMedia('(min-width: 721px) and (min-height: 501px)').addEventListener('change', (e) => {
  if (!e.matches) return;
  for (const el of document.querySelectorAll('.toolbar [popover], .appbar [popover]')) {
    if (el.matches(':popover-open')) el.hidePopover();
  }
});

// Leaving the page (or entering the back/forward cache) closes the socket; coming back reconnects.
window.addEventListener('pagehide', () => connection.suspend());
window.addEventListener('pageshow', (e) => {
  if (e.persisted) connection.resume();
});
window.addEventListener('online', () => status.setConnection(connection.state));
window.addEventListener('offline', () => status.setConnection(connection.state));

connection.start();
