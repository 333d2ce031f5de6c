// status.js — owns what the page tells the user: connection state (#status), the people
// counter (#people), the synced flag on <body>, the sync notice and the toasts.

const STATE_TEXT = {
  connecting: 'Connecting…',
  connected: 'Connected',
  reconnecting: 'Reconnecting…',
  stopped: 'Disconnected',
  refused: 'Private room: open it with its edit or view link',
};
const TOAST_MS = 4000;
const MAX_TOASTS = 3;

export function createStatus({ statusEl, peopleEl, noticeEl, toastHost }) {
  const statusText = statusEl.querySelector('.status-text') ?? statusEl;
  let connState = 'connecting';
  let synced = false;

  const updateNotice = () => {
    noticeEl.hidden = !(connState === 'connected' && !synced);
  };

  return {
    setConnection(state) {
      connState = state;
      statusEl.dataset.state = state;
      const offline = state === 'reconnecting' && navigator.onLine === false;
      statusText.textContent = offline ? 'Offline, retrying…' : STATE_TEXT[state] ?? state;
      statusEl.title = `Connection: ${statusText.textContent}`;
      peopleEl.classList.toggle('stale', state !== 'connected');
      updateNotice();
    },

    setPeople(n) {
      peopleEl.dataset.count = String(n);
      // The number always shows; the words only where there is room (style.css).
      const count = document.createElement('span');
      count.textContent = String(n);
      const words = document.createElement('span');
      words.className = 'people-label';
      // A no-break space: a flex item's leading ordinary space would collapse.
      words.textContent = n === 1 ? '\u00a0person here' : '\u00a0people here';
      peopleEl.replaceChildren(count, words);
      peopleEl.title = n === 1 ? 'Just you here' : `${n} people drawing in this room`;
    },

    setSynced(value) {
      synced = value;
      document.body.dataset.synced = value ? 'true' : 'false';
      updateNotice();
    },

    /** A short, non-blocking message. `text` is always inserted as text, never HTML. */
    toast(text, kind = 'info') {
      const el = document.createElement('div');
      el.className = `toast toast-${kind}`;
      el.setAttribute('role', kind === 'error' ? 'alert' : 'status');
      el.textContent = String(text).slice(0, 300);
      toastHost.append(el);
      while (toastHost.children.length > MAX_TOASTS) toastHost.firstElementChild.remove();
      setTimeout(() => {
        el.classList.add('leaving');
        setTimeout(() => el.remove(), 300);
      }, TOAST_MS);
    },
  };
}
