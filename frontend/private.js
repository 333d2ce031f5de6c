// private.js — owns private rooms on the page: the "New private room" action, the share dialog
// with the edit and view-only links, and the view-only mode (no tools, a "View only" badge, no
// drawing). It never sends a token anywhere but to this page's own server, and keeps the links of
// the rooms this browser created in localStorage, the only place the view link is known later.
// The creating browser opens the owner link; the share dialog never offers it. A link carries its
// token in the fragment (`#token=`), which browsers never send in a request.

const LINKS_KEY_PREFIX = 'livecanvas:links:';

/**
 * The token of this page's link, or null: `#token=`, or `?token=` of an old link, which is then
 * moved into the fragment (history.replaceState) so that the address bar, bookmarks and later
 * requests no longer carry it in the query.
 */
export function tokenFromLocation(loc = location, history = window.history) {
  const fromFragment = new URLSearchParams(loc.hash.slice(1)).get('token');
  if (fromFragment) return fromFragment;
  const search = new URLSearchParams(loc.search);
  const fromQuery = search.get('token');
  if (!fromQuery) return null;
  search.delete('token');
  const rest = search.toString();
  const fragment = new URLSearchParams({ token: fromQuery });
  history.replaceState(history.state, '', `${loc.pathname}${rest ? `?${rest}` : ''}#${fragment}`);
  return fromQuery;
}

export function rememberLinks(room, links) {
  try {
    localStorage.setItem(LINKS_KEY_PREFIX + room, JSON.stringify(links));
  } catch {
    // Storage full or disabled: the dialog then offers the link in the address bar only.
  }
}

function rememberedLinks(room) {
  try {
    const links = JSON.parse(localStorage.getItem(LINKS_KEY_PREFIX + room) ?? 'null');
    return links && typeof links === 'object' ? links : null;
  } catch {
    return null;
  }
}

/** "New private room": asks the server for one and opens its owner link. */
export function setupNewPrivateRoom({ button, toast }) {
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      const response = await fetch('/api/rooms', { method: 'POST' });
      const body = await response.json().catch(() => ({}));
      if (response.status !== 201 || typeof body.editUrl !== 'string') {
        toast(body.message || 'Could not create a private room', 'error');
        return;
      }
      rememberLinks(body.room, { editUrl: body.editUrl, viewUrl: body.viewUrl });
      location.assign(typeof body.ownerUrl === 'string' ? body.ownerUrl : body.editUrl);
    } catch {
      toast('Could not reach the server to create a private room', 'error');
    } finally {
      button.disabled = false;
    }
  });
}

/**
 * The page's role in a private room, from its `welcome`: `canDraw()` is false until the server
 * has said this page may draw (a page opened with a token does not know which one it holds).
 */
export class PrivateRoom {
  #token;
  #readOnly;
  #owner = false;
  #badge;

  constructor({ token, badge }) {
    this.#token = token;
    this.#readOnly = token !== null ? null : false; // null: not known yet
    this.#badge = badge;
  }

  get isPrivate() {
    return this.#token !== null;
  }

  get readOnly() {
    return this.#readOnly === true;
  }

  /** Opened with the owner link (whose URL must not be shared as the edit link). */
  get owner() {
    return this.#owner;
  }

  canDraw() {
    return this.#readOnly === false;
  }

  welcome(msg) {
    this.#readOnly = msg.readOnly === true;
    this.#owner = msg.owner === true;
    document.body.dataset.readonly = String(this.#readOnly);
    this.#badge.hidden = !this.#readOnly;
  }
}

/** Fills one link row of the share dialog, or hides it when the link is not known here. */
function showLink(row, url, toast) {
  row.hidden = !url;
  if (!url) return;
  const field = row.querySelector('input');
  field.value = new URL(url, location.origin).href;
  const copy = row.querySelector('button');
  copy.onclick = async () => {
    field.select();
    let copied = false;
    if (navigator.clipboard && window.isSecureContext) {
      copied = await navigator.clipboard.writeText(field.value).then(() => true, () => false);
    }
    if (!copied) {
      try {
        copied = document.execCommand('copy');
      } catch {
        copied = false;
      }
    }
    toast(copied ? 'Link copied' : 'Press Ctrl+C (or ⌘C) to copy the link');
  };
}

/** The share button of a private room opens #share-dialog with the links this page knows. */
export function setupPrivateShare({ button, dialog, editRow, viewRow, note, closeButton, room, privateRoom, toast }) {
  button.addEventListener('click', () => {
    const here = `${location.pathname}${location.hash}`;
    const links = rememberedLinks(room) ?? {};
    // The page's own URL carries the token it holds; the other link is known only to the browser
    // that created the room.
    const editUrl = privateRoom.readOnly ? null : links.editUrl ?? (privateRoom.owner ? null : here);
    const viewUrl = privateRoom.readOnly ? here : links.viewUrl ?? null;
    showLink(editRow, editUrl, toast);
    showLink(viewRow, viewUrl, toast);
    note.textContent = privateRoom.readOnly
      ? 'You have the view-only link: it lets others watch, not draw.'
      : viewUrl
        ? 'Anyone with the edit link can draw; the view-only link lets people watch.'
        : privateRoom.owner && !editUrl
          ? 'This browser does not know the room’s links: Owner → Replace the links makes new ones.'
          : 'Only the browser that created this room knows its view-only link; ask its creator for it.';
    if (typeof dialog.showModal === 'function') {
      if (!dialog.open) dialog.showModal();
    } else {
      dialog.setAttribute('open', '');
    }
  });
  closeButton.addEventListener('click', () => dialog.close());
}
