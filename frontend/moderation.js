// moderation.js — owns what the page offers and shows about a room's moderation: "Restore" for a
// while after someone else's clear; the room's lock (a badge, and no drawing for anyone but the
// owner); the owner's controls (lock, new links, remove someone: HTTP calls with the owner's token
// as a bearer token); and why the page stopped when the room closed it (its link was withdrawn,
// it was removed, the room was deleted). It never sends a token anywhere but this page's own
// server, and builds its few elements itself, next to the page's own.

/** How long "Restore" is offered after someone else's clear (the server's undo window is longer). */
export const RESTORE_OFFER_MS = 60_000;

/** Close codes after which reconnecting would not help, and what the page says for each. */
export const STOPPING_CLOSES = new Map([
  [4001, 'The owner withdrew the link you used. Ask them for the new one.'],
  [4002, 'The room’s owner removed you. Reload the page to come back with your link.'],
  [4004, 'This room was deleted.'],
]);

function element(tag, props = {}, children = []) {
  const el = document.createElement(tag);
  Object.assign(el, props);
  el.append(...children);
  return el;
}

/**
 * `perform(op)` shows and sends an undo (the page's `sync.local`); `show(strokeId, hidden)` hides
 * or shows a stroke locally; `toast(text, kind)`; `toastHost` holds the restore offers;
 * `badgeAnchor` is the element the lock badge goes after, `ownerAnchor` the one the owner's
 * button goes after; `members()` lists `[clientId, {name}]` of the people here; `token` is the
 * token this page was opened with; `onLinks(links)` keeps replaced links.
 */
export function createModeration({ room, token, perform, show, toast, toastHost, badgeAnchor, ownerAnchor, members, selfId, onLinks }) {
  const offers = new Map(); // strokeId → offer element
  const restoring = new Set(); // clears this page asked to restore
  let owner = false;
  let viewOnly = false;
  let locked = false;

  const badge = element('span', { className: 'pill badge-locked', id: 'locked-badge', hidden: true, textContent: 'Locked' });
  badge.title = 'The owner locked this room: only the owner can draw';
  badgeAnchor.after(badge);

  function render() {
    badge.hidden = !locked;
    badge.textContent = locked && owner ? 'Locked (you can draw)' : 'Locked';
    document.body.dataset.readonly = String(viewOnly || (locked && !owner));
    document.body.dataset.locked = String(locked);
    ownerPanel?.render();
  }

  function withdrawOffer(strokeId) {
    offers.get(strokeId)?.remove();
    offers.delete(strokeId);
  }

  function offerRestore(strokeId) {
    withdrawOffer(strokeId);
    if (locked && !owner) return; // nothing this page could change
    const button = element('button', { type: 'button', className: 'btn restore-button', textContent: 'Restore' });
    const offer = element('div', { className: 'toast restore-offer' }, [
      element('span', { textContent: 'Someone cleared the canvas. ' }),
      button,
    ]);
    offer.setAttribute('role', 'status');
    offer.dataset.strokeId = strokeId;
    button.addEventListener('click', () => {
      withdrawOffer(strokeId);
      restoring.add(strokeId);
      if (!perform({ type: 'undo', strokeId })) toast('Not connected: try again once back', 'error');
    });
    offers.set(strokeId, offer);
    toastHost.append(offer);
    setTimeout(() => withdrawOffer(strokeId), RESTORE_OFFER_MS);
  }

  async function ownerCall(method, path, body) {
    const response = await fetch(`/api/rooms/${encodeURIComponent(room)}${path}`, {
      method,
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const answer = response.status === 204 ? {} : await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(answer.message || `The server answered ${response.status}`);
    return answer;
  }

  const ownerPanel = token ? createOwnerPanel() : null;

  function createOwnerPanel() {
    const button = element('button', { type: 'button', className: 'btn', id: 'owner-tools', hidden: true, textContent: 'Owner' });
    button.title = 'Lock the room, replace its links, remove someone';
    ownerAnchor.after(button);
    const lockButton = element('button', { type: 'button', className: 'btn', id: 'owner-lock' });
    const linksButton = element('button', { type: 'button', className: 'btn', id: 'owner-links', textContent: 'Replace the links' });
    const list = element('ul', { className: 'owner-members', id: 'owner-members' });
    const closeButton = element('button', { type: 'button', className: 'btn', textContent: 'Close' });
    const dialog = element('dialog', { className: 'dialog', id: 'owner-dialog' }, [
      element('h2', { textContent: 'Room owner' }),
      element('p', { textContent: 'Locking lets people watch but not draw. Replacing the links closes everyone who came in with the old ones.' }),
      element('div', { className: 'dialog-actions owner-actions' }, [lockButton, linksButton]),
      list,
      element('div', { className: 'dialog-actions' }, [closeButton]),
    ]);
    document.body.append(dialog);

    function fillMembers() {
      list.replaceChildren();
      for (const [clientId, member] of members()) {
        if (clientId === selfId()) continue;
        const remove = element('button', { type: 'button', className: 'btn btn-danger-ghost', textContent: 'Remove' });
        remove.dataset.clientId = clientId;
        remove.addEventListener('click', () => act(() => ownerCall('POST', '/kick', { clientId }), `${member.name} was removed`));
        list.append(element('li', {}, [element('span', { textContent: member.name }), remove]));
      }
    }

    async function act(call, done) {
      try {
        await call();
        if (done) toast(done);
      } catch (err) {
        toast(err.message, 'error');
      }
    }

    lockButton.addEventListener('click', () => act(() => ownerCall('PUT', '/settings', { locked: !locked })));
    linksButton.addEventListener('click', () =>
      act(async () => {
        const links = await ownerCall('POST', '/links');
        onLinks({ editUrl: links.editUrl, viewUrl: links.viewUrl });
      }, 'New links made: the old ones no longer open this room'),
    );
    button.addEventListener('click', () => {
      fillMembers();
      if (!dialog.open) dialog.showModal();
    });
    closeButton.addEventListener('click', () => dialog.close());

    return {
      render() {
        button.hidden = !owner;
        lockButton.textContent = locked ? 'Unlock the room' : 'Lock the room';
        lockButton.setAttribute('aria-pressed', String(locked));
      },
    };
  }

  return {
    /** The server's `welcome`: the page's role and the room's lock. */
    welcome(msg) {
      owner = msg.owner === true;
      viewOnly = msg.readOnly === true;
      locked = msg.locked === true;
      render();
    },

    /** The owner locked or unlocked the room. */
    locked(msg) {
      locked = msg.locked === true;
      render();
      toast(locked ? (owner ? 'You locked the room: only you can draw' : 'The owner locked the room: you can watch, not draw') : 'The room is unlocked');
    },

    /** Another member's clear, undo or redo: a clear is offered back for a while. */
    remote(msg) {
      if (typeof msg.strokeId !== 'string') return;
      if (msg.type === 'clear') offerRestore(msg.strokeId);
      else if (msg.type === 'undo') withdrawOffer(msg.strokeId);
    },

    /** The server refused an undo: a clear this page tried to restore is shown again. */
    refused(strokeId) {
      if (restoring.delete(strokeId)) show(strokeId, false);
    },

    /** Whether drawing is allowed as far as the lock goes. */
    canDraw() {
      return !locked || owner;
    },

    /** Whether the close means the page should stop reconnecting (and says why, once). */
    stops(detail) {
      const why = STOPPING_CLOSES.get(detail?.code);
      if (!why) return false;
      document.body.dataset.stopped = String(detail.code);
      toast(why, 'error');
      return true;
    },
  };
}
