// undo.js — owns this page's undo and redo: which of its own strokes (and clears) it can take back,
// the Undo/Redo buttons and their shortcuts (Ctrl/Cmd+Z, Ctrl/Cmd+Shift+Z, Ctrl+Y). The stacks are
// kept per room in localStorage, so a reload can still undo what this browser drew; the server
// decides (it answers `not_yours` or `cannot_undo` when the history no longer allows it).
// Undo and redo need the server: until the page is connected and in sync (its picture loaded,
// what it drew offline sent) they are disabled (buttons and keys), not queued, since what they
// would take back may have changed by the time the page is back.

// The server keeps each person's last 100 strokes undoable by default; keeping more ids is useless.
const MAX_KEPT = 100;

export class UndoHistory extends EventTarget {
  #room;
  #undo = []; // stroke ids, oldest first
  #redo = []; // stroke ids undone here, most recent last
  #pending = new Map(); // stroke id → true (undo) / false (redo), sent and not refused yet
  #perform; // (msg) => boolean: sends an undo/redo and shows it here; false if offline
  #show; // (id, hidden) => shows or hides a stroke on this page only
  #online = false; // connected and in sync: an undo or redo can be sent now

  constructor({ room, perform, show }) {
    super();
    this.#room = room;
    this.#perform = perform;
    this.#show = show;
    this.#load();
  }

  get canUndo() {
    return this.#online && this.#undo.length > 0;
  }

  get canRedo() {
    return this.#online && this.#redo.length > 0;
  }

  get online() {
    return this.#online;
  }

  /** Whether the page is connected and in sync, so it can send an undo or redo now. */
  setOnline(online) {
    if (this.#online === online) return;
    this.#online = online;
    this.dispatchEvent(new Event('change'));
  }

  /** A stroke (or clear) of this page's was sent: it can be undone; new work ends the redo chain. */
  drew(id) {
    if (typeof id !== 'string' || this.#undo.includes(id)) return;
    this.#undo.push(id);
    if (this.#undo.length > MAX_KEPT) this.#undo.splice(0, this.#undo.length - MAX_KEPT);
    this.#redo = [];
    this.#changed();
  }

  undo() {
    if (!this.#online) return;
    const id = this.#undo.pop();
    if (id === undefined) return;
    if (!this.#perform({ type: 'undo', strokeId: id })) {
      this.#undo.push(id); // offline: nothing happened
      return;
    }
    this.#expect(id, true);
    this.#redo.push(id);
    this.#changed();
  }

  redo() {
    if (!this.#online) return;
    const id = this.#redo.pop();
    if (id === undefined) return;
    if (!this.#perform({ type: 'redo', strokeId: id })) {
      this.#redo.push(id);
      return;
    }
    this.#expect(id, false);
    this.#undo.push(id);
    this.#changed();
  }

  /**
   * The server refused an undo or redo of stroke `id` (`not_yours`, `cannot_undo`: the refusal
   * names the stroke). Put it back as it was and forget it: it can no longer be taken back.
   */
  refused(id) {
    const undone = this.#pending.get(id);
    this.#pending.delete(id);
    if (undone !== undefined) this.#show(id, !undone);
    this.#undo = this.#undo.filter((kept) => kept !== id);
    this.#redo = this.#redo.filter((kept) => kept !== id);
    this.#changed();
  }

  #expect(id, undo) {
    this.#pending.delete(id);
    this.#pending.set(id, undo);
    // A refusal comes within a round trip; older entries only remember what the server took.
    if (this.#pending.size > MAX_KEPT) this.#pending.delete(this.#pending.keys().next().value);
  }

  #changed() {
    this.#save();
    this.dispatchEvent(new Event('change'));
  }

  #key() {
    return `livecanvas.undo.${this.#room}`;
  }

  #load() {
    try {
      const kept = JSON.parse(localStorage.getItem(this.#key()) ?? 'null');
      const ids = (list) => (Array.isArray(list) ? list.filter((id) => typeof id === 'string').slice(-MAX_KEPT) : []);
      this.#undo = ids(kept?.undo);
      this.#redo = ids(kept?.redo);
    } catch {
      // Nothing kept, or storage unavailable: start empty.
    }
  }

  #save() {
    try {
      localStorage.setItem(this.#key(), JSON.stringify({ undo: this.#undo, redo: this.#redo }));
    } catch {
      // Storage full or unavailable: undo still works until the page closes.
    }
  }
}

/** Wires the Undo/Redo buttons and shortcuts to `history`. */
export function setupUndo({ history, undoButton, redoButton, doc = document }) {
  const titles = { undo: undoButton.title, redo: redoButton.title };
  const render = () => {
    undoButton.disabled = !history.canUndo;
    redoButton.disabled = !history.canRedo;
    const offline = history.online ? '' : ' (when connected)';
    undoButton.title = titles.undo + offline;
    redoButton.title = titles.redo + offline;
  };
  history.addEventListener('change', render);
  undoButton.addEventListener('click', () => history.undo());
  redoButton.addEventListener('click', () => history.redo());
  doc.addEventListener('keydown', (e) => {
    if (!(e.ctrlKey || e.metaKey) || e.altKey) return;
    const target = e.target;
    if (target instanceof HTMLElement && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName))) {
      return; // the field's own undo
    }
    const key = e.key.toLowerCase();
    if (key === 'z' && !e.shiftKey) {
      e.preventDefault();
      history.undo();
    } else if ((key === 'z' && e.shiftKey) || (key === 'y' && e.ctrlKey && !e.shiftKey)) {
      e.preventDefault();
      history.redo();
    }
  });
  render();
}
