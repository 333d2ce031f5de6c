// connection.js — owns the WebSocket: connects, presents the page's secrets, parses JSON frames,
// reconnects with exponential backoff and jitter. Events (on the Connection, an EventTarget):
//   'state'   detail: 'connecting' | 'connected' | 'reconnecting' | 'refused'
//   'open'    a socket just opened
//   'close'   an open socket closed; detail: { code, reason }
//   'message' detail: the parsed JSON object
// Secrets (a private room's token, the undo secret) travel as WebSocket subprotocol values, never
// in the URL: request lines end up in proxies' logs.

/** The subprotocol the server answers with; offered first, always. */
export const SUBPROTOCOL = 'livecanvas';
/** Close code of a refused private room (no token, or not one of its tokens): do not retry. */
export const FORBIDDEN_CLOSE_CODE = 4403;

/** The subprotocols to offer: `livecanvas`, and one value per secret the page holds. */
export function upgradeProtocols({ token = null, author = null } = {}) {
  const protocols = [SUBPROTOCOL];
  if (token) protocols.push(`${SUBPROTOCOL}.token.${token}`);
  if (author) protocols.push(`${SUBPROTOCOL}.author.${author}`);
  return protocols;
}

export class Connection extends EventTarget {
  #url;
  #protocols;
  #opts;
  #ws = null;
  #timer = null;
  #attempt = 0;
  #openedAt = null;
  #state = null;
  #suspended = false;

  constructor(url, { protocols = [], baseDelay = 500, maxDelay = 10000, jitter = 0.3, stableAfter = 5000 } = {}) {
    super();
    this.#url = url;
    this.#protocols = protocols;
    this.#opts = { baseDelay, maxDelay, jitter, stableAfter };
  }

  get state() {
    return this.#state;
  }

  start() {
    // When the browser says the network is back, don't wait for the backoff timer.
    window.addEventListener('online', () => this.#retryNow());
    this.#connect();
  }

  /**
   * Closes the socket without reconnecting (the page is being hidden or put in the back/forward
   * cache: an open socket there would count as a phantom person in the room).
   */
  suspend() {
    this.#suspended = true;
    clearTimeout(this.#timer);
    this.#timer = null;
    const ws = this.#ws;
    if (!ws) return;
    this.#ws = null;
    const wasOpen = this.#openedAt !== null;
    this.#openedAt = null;
    ws.close(1000, 'page hidden');
    if (wasOpen) this.dispatchEvent(new CustomEvent('close', { detail: { code: 1000, reason: 'page hidden' } }));
  }

  /** Reconnects after `suspend()` (the page came back from the back/forward cache). */
  resume() {
    if (!this.#suspended) return;
    this.#suspended = false;
    this.#attempt = 0;
    this.#connect();
  }

  /** Sends `obj` as JSON if the socket is open; otherwise drops it and returns false. */
  send(obj) {
    const ws = this.#ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(obj));
    return true;
  }

  #setState(state) {
    if (state === this.#state) return;
    this.#state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: state }));
  }

  #connect() {
    clearTimeout(this.#timer);
    this.#timer = null;
    this.#setState(this.#state === null || this.#state === 'connecting' ? 'connecting' : 'reconnecting');

    let ws;
    try {
      ws = new WebSocket(this.#url, this.#protocols);
    } catch (err) {
      console.warn('livecanvas: cannot open WebSocket', err);
      this.#scheduleRetry();
      return;
    }
    this.#ws = ws;

    ws.addEventListener('open', () => {
      if (ws !== this.#ws) return;
      this.#openedAt = Date.now();
      this.#setState('connected');
      this.dispatchEvent(new Event('open'));
    });

    ws.addEventListener('message', (ev) => {
      if (ws !== this.#ws || typeof ev.data !== 'string') return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) return;
      this.dispatchEvent(new CustomEvent('message', { detail: msg }));
    });

    // 'error' is always followed by 'close', so only 'close' is handled.
    ws.addEventListener('close', (ev) => {
      if (ws !== this.#ws) return;
      this.#ws = null;
      const openedAt = this.#openedAt;
      this.#openedAt = null;
      if (openedAt !== null) {
        // A connection that stayed up for a while was a good one: start the backoff afresh.
        if (Date.now() - openedAt >= this.#opts.stableAfter) this.#attempt = 0;
        this.dispatchEvent(new CustomEvent('close', { detail: { code: ev.code, reason: ev.reason } }));
      }
      // Refused for good (a private room without its token): retrying cannot help.
      if (ev.code === FORBIDDEN_CLOSE_CODE) {
        this.#suspended = true;
        this.#setState('refused');
        return;
      }
      this.#scheduleRetry();
    });
  }

  #scheduleRetry() {
    if (this.#suspended) return;
    this.#setState('reconnecting');
    const { baseDelay, maxDelay, jitter } = this.#opts;
    const base = Math.min(maxDelay, baseDelay * 2 ** this.#attempt);
    this.#attempt = Math.min(this.#attempt + 1, 20);
    const delay = Math.max(0, base * (1 + (Math.random() * 2 - 1) * jitter));
    this.#timer = setTimeout(() => this.#connect(), delay);
  }

  #retryNow() {
    if (this.#timer === null || this.#suspended) return;
    this.#connect();
  }
}
