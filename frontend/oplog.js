// oplog.js — the pure bookkeeping behind Board's operation log (no DOM, so `node --test` can run
// it): which operations since the base are visible, where the last visible clear is, which
// operations a stroke id names, and folding the oldest operations away when the log is too long.
//
// An entry is `{ op, hidden }`; `op` is `{type:'draw', …, strokeId?}` or `{type:'clear', strokeId?}`.
// The picture is: the base, then every visible op in order (a visible clear wipes everything
// before it, the base included).

export class OpLog {
  /** @type {{op: object, hidden: boolean}[]} */
  entries = [];

  get length() {
    return this.entries.length;
  }

  push(op) {
    this.entries.push({ op, hidden: false });
    return this.entries.length - 1;
  }

  reset() {
    this.entries = [];
  }

  hasStroke(strokeId) {
    if (strokeId === undefined || strokeId === null) return false;
    return this.entries.some((e) => e.op.strokeId === strokeId);
  }

  /**
   * Marks every op with this stroke id hidden (or visible). Returns the index of the first op
   * with that id (-1 if none), and the index of the first op whose visibility changed (-1 if none).
   */
  setHidden(strokeId, hidden) {
    let first = -1;
    let changed = -1;
    if (strokeId === undefined || strokeId === null) return { first, changed };
    const h = Boolean(hidden);
    const entries = this.entries;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i];
      if (e.op.strokeId !== strokeId) continue;
      if (first < 0) first = i;
      if (e.hidden !== h) {
        e.hidden = h;
        if (changed < 0) changed = i;
      }
    }
    return { first, changed };
  }

  /** Index of the last visible clear in [0, end), or -1. */
  lastVisibleClear(end = this.entries.length) {
    for (let i = Math.min(end, this.entries.length) - 1; i >= 0; i--) {
      const e = this.entries[i];
      if (!e.hidden && e.op.type === 'clear') return i;
    }
    return -1;
  }

  /**
   * Where replaying [0, end) has to start, given an optional cached state at index `cached`
   * (the picture after the visible ops of [0, cached)): `{ from, start }` with `start` one of
   * 'base' (draw the base, replay from 0), 'blank' (replay from `from`, after a visible clear) or
   * 'cached' (draw the cached picture, replay from `from` = cached).
   */
  replayPlan(end = this.entries.length, cached = -1) {
    const c = this.lastVisibleClear(end);
    if (c >= 0 && c + 1 >= cached) return { from: c + 1, start: 'blank' };
    if (cached >= 0 && cached <= end) return { from: cached, start: 'cached' };
    return { from: 0, start: 'base' };
  }

  /** The visible ops of [from, to), in order. */
  visibleOps(from = 0, to = this.entries.length) {
    const out = [];
    for (let i = Math.max(0, from); i < Math.min(to, this.entries.length); i++) {
      if (!this.entries[i].hidden) out.push(this.entries[i].op);
    }
    return out;
  }

  /**
   * Removes the `count` oldest entries and returns the visible ops among them (to be drawn onto
   * the base, in order). Hidden ones are dropped: a stroke folded away cannot be shown or hidden
   * again.
   */
  foldOldest(count) {
    const n = Math.max(0, Math.min(count, this.entries.length));
    const folded = this.entries.splice(0, n);
    return folded.filter((e) => !e.hidden).map((e) => e.op);
  }
}
