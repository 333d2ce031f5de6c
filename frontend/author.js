// author.js — owns this browser's identity for undo: a secret made once (32 random bytes) and kept
// in localStorage, sent when connecting (`?author=`). The server keeps only a hash of it, so the
// strokes drawn here stay this browser's own across reloads and reconnections; nobody else can
// undo them by guessing an id. Also makes stroke ids (one per pointer press).

const SECRET_KEY = 'livecanvas.author';
const SECRET_RE = /^[A-Za-z0-9_-]{16,128}$/;

function randomToken(bytes) {
  const data = new Uint8Array(bytes);
  crypto.getRandomValues(data);
  // base64url without padding: the server's alphabet (A-Z a-z 0-9 _ -).
  return btoa(String.fromCharCode(...data)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

let memorySecret = null; // when localStorage is unavailable (private mode, blocked storage)

/** This browser's secret, made on first use. */
export function authorSecret() {
  try {
    const kept = localStorage.getItem(SECRET_KEY);
    if (kept && SECRET_RE.test(kept)) return kept;
    const made = randomToken(32);
    localStorage.setItem(SECRET_KEY, made);
    return made;
  } catch {
    memorySecret ??= randomToken(32);
    return memorySecret;
  }
}

/** A new stroke id: random, so two pages never pick the same one. */
export function newStrokeId() {
  return randomToken(12);
}

const STROKE_ID_RE = /^[A-Za-z0-9_-]{1,64}$/;

export function isStrokeId(id) {
  return typeof id === 'string' && STROKE_ID_RE.test(id);
}
