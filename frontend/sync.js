// sync.js — owns the snapshot flow of the protocol: after `welcome` with awaitingSnapshot, queue
// draw/clear until our `canvasState`/`canvasEmpty` arrives, load the picture, replay the queue.
// The server keeps every room's canvas and sends it itself (its picture, then the operations after
// it), so by default every welcome has awaitingSnapshot. Only under `--newcomer-picture peer` does
// it ask a member instead, with `canvasRequest`, which this module answers with the master canvas
// (and a page alone in the room gets awaitingSnapshot false and no picture).
// What is drawn while disconnected (a node restarting, a network blip) is kept, up to a bound, and
// drawn over the fresh picture and sent once the page is back in sync, so a reconnect loses no
// stroke.

import { toSegment, decodeImage, DEFAULT_WIDTH, DEFAULT_HEIGHT } from './board.js';
import { isStrokeId } from './author.js';
import { toShape } from './shapes.js';
import { toText } from './text.js';

// At most this many operations drawn while disconnected are kept to send later: the server's
// default --draw-burst, so that sending them all at once is never rate-limited.
export const MAX_OFFLINE_OPS = 400;

export class Sync {
  #board;
  #send;
  #onSynced;
  #epoch = 0; // bumped on every welcome/disconnect; stale async work checks it
  #clientId = null;
  #awaiting = false;
  #loading = false;
  #queue = [];
  #offline = []; // drawn here while disconnected: sent once back in sync

  constructor({ board, send, onSynced }) {
    this.#board = board;
    this.#send = send;
    this.#onSynced = onSynced;
  }

  welcome(msg) {
    this.#epoch++;
    this.#clientId = typeof msg.clientId === 'string' ? msg.clientId : null;
    this.#queue = [];
    this.#loading = false;
    const width = Number.isInteger(msg.width) ? msg.width : DEFAULT_WIDTH;
    const height = Number.isInteger(msg.height) ? msg.height : DEFAULT_HEIGHT;
    // Resizing clears; otherwise keep what is on screen until the picture arrives: it beats a blank
    // board meanwhile, and the picture replaces it (strokes drawn while disconnected are drawn over
    // it again, and sent). Under `--newcomer-picture peer` a page alone in the room gets no
    // picture, and keeps what it shows.
    if (width !== this.#board.width || height !== this.#board.height) this.#board.setSize(width, height);
    this.#awaiting = msg.awaitingSnapshot === true;
    if (this.#awaiting) this.#onSynced(false);
    else this.#finish();
  }

  disconnected() {
    this.#epoch++;
    this.#clientId = null;
    this.#queue = [];
    this.#loading = false;
    this.#awaiting = true;
    this.#onSynced(false);
  }

  /** A draw, shape, text, clear, undo or redo from another client. */
  remote(msg) {
    const op = toOp(msg);
    if (!op) return;
    if (this.#awaiting) {
      if (this.#clientId !== null) this.#queue.push(op);
    } else {
      this.#apply(op);
    }
  }

  /**
   * A draw or clear made here: shown at once, sent, and replayed over the snapshot if one is
   * pending. A draw that cannot be sent (no connection) is kept and sent once back in sync; a clear
   * is not (sent later, it would wipe what others drew meanwhile, unseen).
   */
  local(op) {
    const toggle = op.type === 'undo' || op.type === 'redo';
    // An undo or redo is not kept for later: the page offers it again once back.
    if (toggle && this.#clientId === null) return false;
    this.#apply(op);
    if (this.#clientId !== null && this.#send(op)) {
      if (this.#awaiting) this.#queue.push(op);
      return true;
    }
    if (toggle) {
      this.#apply({ type: op.type === 'undo' ? 'redo' : 'undo', strokeId: op.strokeId });
      return false;
    }
    if (op.type !== 'clear' && this.#offline.length < MAX_OFFLINE_OPS) this.#offline.push(op);
    return false;
  }

  /** Operations drawn while disconnected and not sent yet. */
  get unsent() {
    return this.#offline.length;
  }

  async snapshot(msg) {
    if (!this.#isForUs(msg)) return;
    const epoch = this.#epoch;
    this.#loading = true;
    let img = null;
    try {
      img = await decodeImage(msg.data);
    } catch (err) {
      console.warn('livecanvas: unusable snapshot, starting blank', err);
    }
    if (epoch !== this.#epoch) return; // a newer connection took over meanwhile
    this.#loading = false;
    this.#board.setBase(img); // null: blank
    this.#finish();
  }

  empty(msg) {
    if (!this.#isForUs(msg)) return;
    this.#board.setBase(null);
    this.#finish();
  }

  request(msg) {
    if (typeof msg.clientId !== 'string') return;
    let data;
    try {
      data = this.#board.toDataURL();
    } catch (err) {
      console.warn('livecanvas: cannot export the canvas', err); // the server will ask someone else
      return;
    }
    this.#send({ type: 'canvasState', clientId: msg.clientId, data });
  }

  #isForUs(msg) {
    return this.#awaiting && !this.#loading && this.#clientId !== null && msg.clientId === this.#clientId;
  }

  #apply(op) {
    if (op.type === 'undo' || op.type === 'redo') this.#board.setHidden(op.strokeId, op.type === 'undo');
    else this.#board.apply(op);
  }

  #finish() {
    const queue = this.#queue;
    this.#queue = [];
    this.#awaiting = false;
    for (const op of queue) this.#apply(op);
    const offline = this.#offline;
    this.#offline = [];
    for (const op of offline) {
      this.#apply(op);
      if (!this.#send(op)) this.#offline.push(op); // lost the connection again: next time
    }
    this.#onSynced(true);
  }
}

/** A relayed message as an operation for the board (`null`: not one, or malformed). */
function toOp(msg) {
  const strokeId = isStrokeId(msg.strokeId) ? msg.strokeId : undefined;
  switch (msg.type) {
    case 'undo':
    case 'redo':
      return strokeId ? { type: msg.type, strokeId } : null;
    case 'clear':
      return { type: 'clear', strokeId };
    case 'shape':
    case 'text': {
      const figure = msg.type === 'shape' ? toShape(msg) : toText(msg);
      if (figure) figure.strokeId = strokeId;
      return figure;
    }
    default: {
      const segment = toSegment(msg);
      if (segment) segment.strokeId = strokeId;
      return segment;
    }
  }
}
