// names.js — owns the user's display name: the rename pop-over (opened from one's own chip in the
// member list; never a dialog that stands between a first visit and the board), remembering the
// name in localStorage, and sending it to the server after every welcome. Until a name is chosen
// the server's default ("Guest 1234") is shown. It never shows a name as HTML and never sends one
// the server would refuse.

const STORAGE_KEY = 'livecanvas.name';
export const MAX_NAME_CHARS = 32;
// Controls and the invisible characters the server refuses (bidi overrides/isolates, zero-width
// space, BOM, …); zero-width joiners stay, as emoji and some scripts need them.
const HIDDEN_RE = /[\p{Cc}\u00AD\u034F\u061C\u115F\u1160\u180E\u200B\u200E\u200F\u2028-\u202E\u2060-\u206F\u3164\uFEFF\uFFA0\uFFF9-\uFFFB]/u;

/** The trimmed name, or null if the server would refuse it. */
export function cleanName(raw) {
  if (typeof raw !== 'string') return null;
  const name = raw.trim();
  const chars = [...name].length;
  if (chars < 1 || chars > MAX_NAME_CHARS || HIDDEN_RE.test(name)) return null;
  return name;
}

function stored(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null; // storage disabled: the name lasts for this page only
  }
}

function store(key, value) {
  try {
    localStorage.setItem(key, value);
  } catch {
    /* storage disabled */
  }
}

/**
 * Wires the rename pop-over (#name-form, `popover`): `open()` shows it with the current name
 * selected; Save (or Enter) keeps a valid name and sends it; Escape or a click elsewhere closes it.
 * It is never modal: nothing waits for it, and the board takes the pointer while it is open.
 */
export function setupNames({ form, input, error, send }) {
  let name = cleanName(stored(STORAGE_KEY));
  let connected = false;

  const sendName = () => {
    if (connected && name) send({ type: 'name', name });
  };

  const open = (current, anchor) => {
    input.value = name ?? current ?? '';
    error.hidden = true;
    if (anchor) {
      // Under the chip that opened it (style.css places it there on wide screens).
      const r = anchor.getBoundingClientRect();
      form.style.setProperty('--anchor-left', `${Math.round(r.left)}px`);
      form.style.setProperty('--anchor-top', `${Math.round(r.bottom + 6)}px`);
    }
    if (!form.matches(':popover-open')) form.showPopover();
    input.focus();
    input.select();
  };

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const chosen = cleanName(input.value);
    if (!chosen) {
      error.hidden = false;
      return;
    }
    name = chosen;
    store(STORAGE_KEY, chosen);
    form.hidePopover();
    sendName();
  });

  return {
    get name() {
      return name;
    },
    /** A (re)connection was welcomed: the server knows us by its default until we say. */
    welcomed() {
      connected = true;
      sendName();
    },
    disconnected() {
      connected = false;
    },
    /**
     * Opens the rename pop-over under `anchor` (an element); `current` (the name shown now) fills
     * it when none was chosen.
     */
    open,
  };
}
