// presence.js — owns the member list in the app bar (#members): a chip per member with a colour
// dot and the name, one's own marked and clickable to change it. Names are always set with
// textContent, never as HTML. It keeps the latest `presence` message so that others (the cursor
// overlay) can ask who is still here. The list holds at most what the server sends (the first 200
// members and the total).

const COLOR_RE = /^#[0-9a-fA-F]{6}$/;

export function createPresence({ listEl, toggleEl, onRenameSelf }) {
  let selfId = null;
  let members = new Map(); // clientId → { name, color }
  // Whether the list holds everyone (the server lists at most 200): only then does a member
  // missing from it mean that member left.
  let complete = true;

  toggleEl.addEventListener('click', () => {
    const expanded = listEl.classList.toggle('expanded');
    toggleEl.setAttribute('aria-expanded', String(expanded));
  });

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
      el.addEventListener('click', onRenameSelf);
      const item = document.createElement('li');
      item.append(el);
      return item;
    }
    el.title = member.name;
    return el;
  };

  const render = (total) => {
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

    /** A `presence` message: validated field by field, anything odd skipped. */
    update(msg) {
      if (!Array.isArray(msg.members)) return;
      const next = new Map();
      for (const m of msg.members) {
        if (!m || typeof m.clientId !== 'string' || typeof m.name !== 'string') continue;
        const color = typeof m.color === 'string' && COLOR_RE.test(m.color) ? m.color : '#6b7280';
        next.set(m.clientId, { name: m.name.slice(0, 64), color });
      }
      members = next;
      const total = Number.isInteger(msg.total) && msg.total >= next.size ? msg.total : next.size;
      complete = total <= next.size;
      render(total);
    },

    /** Whether `id` may still be here: listed, or the list is capped and may leave it out. */
    mayBeHere(id) {
      return !complete || members.has(id);
    },

    member(id) {
      return members.get(id) ?? null;
    },

    get selfId() {
      return selfId;
    },
  };
}
