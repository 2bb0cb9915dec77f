// The dashboard's side of the HTTP API: requests with the session's token,
// problem documents turned into errors, event streams read from fetch()
// bodies (EventSource cannot send an Authorization header), downloads
// through Blob URLs (links cannot carry one either).

const TOKEN_KEY = 'docket.token';

// The signed-in user. The token lives in sessionStorage only: it is gone
// when the tab closes, and no other site or tab can read it.
export const session = {
  token: sessionStorage.getItem(TOKEN_KEY) || '',
  owner: '',
  admin: false,
  open: false, // the server runs without tokens: every caller is an admin
};

// Called when the API refuses the token (revoked, server restarted with
// other tokens): the app shows the sign-in form again.
let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

// A Problem is an API error: an RFC 9457 document, or what stood for one.
export class Problem extends Error {
  constructor(status, doc = {}) {
    super(doc.detail || doc.title || `HTTP ${status}`);
    this.status = status;
    this.type = doc.type || '';
    this.title = doc.title || '';
    this.detail = doc.detail || '';
    this.retryAfter = 0;
  }
}

// url resolves an API path against the page, so that the dashboard also
// works behind a proxy that serves docket under a path prefix.
export function url(path) {
  return new URL(path.replace(/^\//, ''), document.baseURI).href;
}

function headers(extra = {}, token = session.token) {
  const h = { ...extra };
  if (token) h.Authorization = 'Bearer ' + token;
  return h;
}

async function problemOf(res) {
  let doc = {};
  const ct = res.headers.get('Content-Type') || '';
  try {
    if (ct.includes('json')) doc = await res.json();
    else doc = { detail: (await res.text()).slice(0, 300) || res.statusText };
  } catch { /* a body that does not parse: the status says enough */ }
  const p = new Problem(res.status, doc);
  p.retryAfter = Number(res.headers.get('Retry-After')) || 0;
  return p;
}

// request sends one request and returns the response, or throws a Problem
// for an error status (a network failure throws a Problem with status 0).
export async function request(method, path, { body, headers: extra, signal, token } = {}) {
  let res;
  try {
    res = await fetch(url(path), { method, body, headers: headers(extra, token ?? session.token), signal, cache: 'no-store' });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new Problem(0, { detail: 'the server did not answer (' + e.message + ')' });
  }
  if (!res.ok) {
    const p = await problemOf(res);
    if (p.status === 401 && token === undefined && !session.open) onUnauthorized(p);
    throw p;
  }
  return res;
}

// json sends a request and parses its JSON answer (null for 204).
export async function json(method, path, opts) {
  const res = await request(method, path, opts);
  if (res.status === 204) return null;
  return res.json();
}

export const get = (path, opts) => json('GET', path, opts);
export const post = (path, opts) => json('POST', path, opts);

// whoAmI asks who a token (or no token) belongs to. Without a token it
// succeeds only in open mode.
export async function whoAmI(token) {
  return json('GET', '/ui/session', { token });
}

export async function signIn(token) {
  const me = await whoAmI(token);
  session.token = token;
  session.owner = me.owner || '';
  session.admin = !!me.admin;
  session.open = false;
  sessionStorage.setItem(TOKEN_KEY, token);
  return me;
}

export function signOut() {
  session.token = '';
  session.owner = '';
  session.admin = false;
  sessionStorage.removeItem(TOKEN_KEY);
}

// detect finds how the page may talk to the API: open mode (no token
// needed), a token kept from before in this tab, or neither (sign in).
export async function detect() {
  // Both questions at once when a token is kept: one round trip, not two.
  const kept = session.token;
  const [open, mine] = await Promise.allSettled([whoAmI(''), kept ? whoAmI(kept) : Promise.reject(null)]);
  if (open.status === 'fulfilled') {
    Object.assign(session, { open: true, admin: !!open.value.admin, owner: '', token: '' });
    return 'open';
  }
  if (open.reason?.status !== 401) throw open.reason;
  if (kept) {
    if (mine.status === 'fulfilled') {
      Object.assign(session, { owner: mine.value.owner || '', admin: !!mine.value.admin, open: false });
      return 'signed-in';
    }
    if (mine.reason?.status !== 401 && mine.reason?.status !== 403) throw mine.reason;
    signOut();
  }
  return 'sign-in';
}

const sleep = (ms, signal) => new Promise((resolve) => {
  const t = setTimeout(resolve, ms);
  signal?.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
});

// stream follows an NDJSON event stream of the API (GET /v1/events or
// /v1/jobs/{id}/events) and calls onEvent with each {event, id, job}. A
// broken stream is reopened after 1 s, 2 s, 4 s… (at most 30 s, with
// jitter); a job's stream resumes after the last version seen. onEvent
// returning true ends the stream for good (a job's terminal event);
// onStatus hears 'live', 'reconnecting' and 'closed'; onOpen is called at
// every (re)connection, for the caller to reload what it may have missed.
export function stream(path, { onEvent, onStatus = () => {}, onOpen = () => {}, resume = false }) {
  const ctl = new AbortController();
  let last = -1;
  let stopped = false;
  const stop = () => { stopped = true; ctl.abort(); };
  (async () => {
    let delay = 1000;
    while (!stopped) {
      let finished = false;
      try {
        const h = { Accept: 'application/x-ndjson' };
        if (resume && last >= 0) h['Last-Event-ID'] = String(last);
        const res = await request('GET', path, { headers: h, signal: ctl.signal });
        onStatus('live');
        onOpen();
        delay = 1000;
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let nl;
          while ((nl = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, nl).trim();
            buf = buf.slice(nl + 1);
            if (!line) continue; // keep-alive
            const ev = JSON.parse(line);
            if (typeof ev.id === 'number') last = ev.id;
            if (onEvent(ev) === true) finished = true;
          }
          if (finished) break;
        }
        if (finished) { reader.cancel().catch(() => {}); stopped = true; break; }
      } catch (e) {
        if (stopped || e.name === 'AbortError') break;
        // A refused token is the app's business; a job that is gone has
        // nothing more to say.
        if (e.status === 401 || e.status === 403 || e.status === 404) { stopped = true; break; }
        if (e.status === 429 && e.retryAfter) delay = Math.max(delay, e.retryAfter * 1000);
      }
      if (stopped) break;
      onStatus('reconnecting');
      await sleep(delay * (0.8 + Math.random() * 0.4), ctl.signal);
      delay = Math.min(delay * 2, 30000);
    }
    onStatus('closed');
  })();
  return { close: stop };
}

// download fetches path with the token and hands it to the browser as a
// file named name.
export async function download(path, name) {
  const res = await request('GET', path);
  const blob = await res.blob();
  const href = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = href;
  a.download = name;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  // The download has its own copy by the time the click is handled.
  setTimeout(() => URL.revokeObjectURL(href), 60000);
  return blob;
}

// The states of a job, in the order of its life.
export const STATES = ['queued', 'running', 'succeeded', 'failed', 'canceled'];
export const terminal = (state) => state === 'succeeded' || state === 'failed' || state === 'canceled';
