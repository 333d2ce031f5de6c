// presence.js — owns the member list in the app bar (#members): a chip per member with a colour
// dot and the name; one's own first, marked with a pencil, a button that opens the rename
// pop-over. Names are always set with textContent, never as HTML. It keeps the list as the server describes it (the whole `presence`
// after `welcome`, then each `presenceChange` applied to it) so that others (the cursor overlay)
// can ask who is still here. The list holds at most what the server sends (the first 200 members);
// the total comes with it and with every `clientCount`.

const COLOR_RE = /^#[0-9a-fA-F]{6}$/;

export function createPresence({ listEl, toggleEl, onRenameSelf }) {
  let selfId = null;
  let members = new Map(); // clientId → { name, color }, in join order
  let total = 0;
  // Whether the list holds everyone (the server lists at most 200): only then does a member
  // missing from it mean that member left.
  const complete = () => total <= members.size;

  /** A listed member as sent, or null when it is malformed. */
  const parseMember = (m) => {
    if (!m || typeof m.clientId !== 'string' || typeof m.name !== 'string') return null;
    const color = typeof m.color === 'string' && COLOR_RE.test(m.color) ? m.color : '#6b7280';
    return [m.clientId, { name: m.name.slice(0, 64), color }];
  };
  const listOf = (value) => (Array.isArray(value) ? value : []);
  const setTotal = (value) => {
    total = Number.isInteger(value) && value >= members.size ? value : members.size;
  };

  toggleEl.addEventListener('click', () => {
    const expanded = listEl.classList.toggle('expanded');
    toggleEl.setAttribute('aria-expanded', String(expanded));
  });

  const pencil = () => {
    const ns = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('aria-hidden', 'true');
    svg.classList.add('member-edit');
    const path = document.createElementNS(ns, 'path');
    path.setAttribute('d', 'M4 20l1-4L16 5l3 3L8 19l-4 1z');
    path.setAttribute('fill', 'none');
    path.setAttribute('stroke', 'currentColor');
    path.setAttribute('stroke-width', '2.4');
    path.setAttribute('stroke-linejoin', 'round');
    svg.append(path);
    return svg;
  };

  const chip = (id, member) => {
    const self = id === selfId;
    const el = document.createElement(self ? 'button' : 'li');
    el.className = self ? 'member member-self' : 'member';
    el.dataset.clientId = id;
    const dot = document.createElement('span');
    dot.className = 'member-dot';
    dot.style.backgroundColor = member.color; // a CSSOM property, not an inline style attribute
    const label = document.createElement('span');
    label.className = 'member-name';
    label.textContent = member.name;
    el.append(dot, label);
    if (self) {
      el.type = 'button';
      el.title = 'You: click to change your name';
      el.setAttribute('aria-label', `You: ${member.name}. Change your name`);
      el.append(pencil());
      el.addEventListener('click', () => onRenameSelf(member.name, el));
      const item = document.createElement('li');
      item.append(el);
      return item;
    }
    el.title = member.name;
    return el;
  };

  const render = () => {
    const items = [];
    // One's own chip first, then the others in join order.
    const ordered = [...members].sort(([a], [b]) => (b === selfId) - (a === selfId));
    for (const [id, member] of ordered) items.push(chip(id, member));
    const hidden = total - members.size;
    if (hidden > 0) {
      const more = document.createElement('li');
      more.className = 'member member-more';
      more.textContent = `+${hidden} more`;
      items.push(more);
    }
    listEl.replaceChildren(...items);
  };

  return {
    welcomed(clientId) {
      selfId = typeof clientId === 'string' ? clientId : null;
    },

    /** A `presence` message (the whole list): validated field by field, anything odd skipped. */
    update(msg) {
      if (!Array.isArray(msg.members)) return;
      members = new Map(msg.members.map(parseMember).filter(Boolean));
      setTotal(msg.total);
      render();
    },

    /** A `presenceChange` message: who left, who renamed, who joined, applied in that order. */
    change(msg) {
      for (const id of listOf(msg.left)) members.delete(id);
      for (const [id, member] of listOf(msg.renamed).map(parseMember).filter(Boolean)) {
        if (members.has(id)) members.set(id, member);
      }
      for (const [id, member] of listOf(msg.joined).map(parseMember).filter(Boolean)) {
        members.set(id, member);
      }
      setTotal(msg.total);
      render();
    },

    /** A `clientCount`: the total beside the listed members ("+N more"). */
    setTotal(count) {
      setTotal(count);
      render();
    },

    /** Whether `id` may still be here: listed, or the list is capped and may leave it out. */
    mayBeHere(id) {
      return !complete() || members.has(id);
    },

    member(id) {
      return members.get(id) ?? null;
    },

    /** The listed members, `[clientId, { name, color }]` in join order. */
    list() {
      return [...members];
    },

    get selfId() {
      return selfId;
    },
  };
}
