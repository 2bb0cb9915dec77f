// The queues view: every queue's counts, throughput and failure rate,
// refreshed every two seconds, with pause and resume for admins. The API
// gives counts only; rates come from how the counts move between polls.
import * as api from './api.js';
import { h, alertBox, announce, sparkline, stateBadge, fmtRate, fmtInt } from './ui.js';

const EVERY = 2000;     // ms between polls
const KEEP = 90;        // samples kept per queue: three minutes
const RATE_SAMPLES = 5; // the current rate is the mean over the last ten seconds
const FAIL_WINDOW = 60000;

// history outlives the view, so that coming back shows the recent past.
const history = new Map(); // queue name -> [{t, finished, failed, succeeded}]

function record(q, t) {
  const c = q.counts || {};
  const s = { t, finished: (c.succeeded || 0) + (c.failed || 0) + (c.canceled || 0), failed: c.failed || 0, succeeded: c.succeeded || 0 };
  let list = history.get(q.name);
  if (!list) history.set(q.name, list = []);
  list.push(s);
  if (list.length > KEEP) list.splice(0, list.length - KEEP);
  return list;
}

// rates turns samples into jobs finished per second between polls. Counts
// can fall (retention purges, deletes): a fall counts as no work done.
function rates(list) {
  const out = [];
  for (let i = 1; i < list.length; i++) {
    const dt = (list[i].t - list[i - 1].t) / 1000;
    out.push(dt > 0 ? Math.max(0, list[i].finished - list[i - 1].finished) / dt : 0);
  }
  return out;
}

function currentRate(list) {
  if (list.length < 2) return null;
  const a = list[Math.max(0, list.length - 1 - RATE_SAMPLES)], b = list[list.length - 1];
  const dt = (b.t - a.t) / 1000;
  return dt > 0 ? Math.max(0, b.finished - a.finished) / dt : null;
}

// failure is the share of the jobs finished in the last minute that
// failed; with none finished, the share over the queue's whole history.
function failure(list, counts) {
  const b = list[list.length - 1];
  const a = list.find((s) => b.t - s.t <= FAIL_WINDOW) || b;
  const df = Math.max(0, b.failed - a.failed), ds = Math.max(0, b.succeeded - a.succeeded);
  if (df + ds > 0) return { rate: df / (df + ds), window: 'last minute' };
  const f = counts.failed || 0, s = counts.succeeded || 0;
  if (f + s > 0) return { rate: f / (f + s), window: 'all time' };
  return null;
}

const pct = (r) => (r == null ? '—' : (r * 100 >= 10 || r === 0 ? Math.round(r * 100) : (r * 100).toFixed(1)) + '%');

export function render(root) {
  const cols = ['Queue', 'Status', 'Queued', 'Running', 'Succeeded', 'Failed', 'Canceled', 'Throughput', 'Failure rate'];
  if (api.session.admin) cols.push('Actions');
  const live = h('span', { class: 'live' }, 'connecting');
  const alertSlot = h('div');
  const cards = h('div', { class: 'cards', 'aria-label': 'Totals' });
  const tbody = h('tbody');
  const table = h('table', { class: 'cardy' },
    h('caption', { class: 'visually-hidden' }, 'Queues with their job counts, throughput and failure rate'),
    h('thead', {}, h('tr', {}, cols.map((c, i) => h('th', { scope: 'col', class: i >= 2 && i <= 6 ? 'num' : null }, c)))),
    tbody);
  root.append(
    h('div', { class: 'head' },
      h('h1', {}, 'Queues'),
      h('span', { class: 'spacer' }),
      live),
    alertSlot,
    cards,
    h('section', { class: 'panel', 'aria-label': 'Queues' }, h('div', { class: 'table-wrap' }, table)));

  const rows = new Map();
  let timer = 0, stopped = false, failures = 0;

  function row(q) {
    let r = rows.get(q.name);
    if (r) return r;
    const cell = (label, cls = 'num') => h('td', { class: cls, 'data-label': label });
    r = {
      tr: h('tr', { 'data-queue': q.name }),
      name: h('td', { class: 'wide', 'data-label': 'Queue' },
        h('a', { href: '#/jobs?queue=' + encodeURIComponent(q.name) }, h('strong', {}, q.name))),
      status: cell('Status', ''),
      queued: cell('Queued'), running: cell('Running'), succeeded: cell('Succeeded'), failed: cell('Failed'), canceled: cell('Canceled'),
      rate: cell('Throughput', 'wide'),
      fail: cell('Failure rate', ''),
    };
    r.tr.append(r.name, r.status, r.queued, r.running, r.succeeded, r.failed, r.canceled, r.rate, r.fail);
    if (api.session.admin) {
      r.button = h('button', { type: 'button', class: 'btn small' });
      r.button.addEventListener('click', () => togglePause(q.name, r));
      r.tr.append(h('td', { 'data-label': 'Actions' }, r.button));
    }
    rows.set(q.name, r);
    return r;
  }

  function paint(q, list) {
    const r = row(q);
    const c = q.counts || {};
    r.paused = q.paused;
    r.status.replaceChildren(stateBadge(q.paused ? 'paused' : 'active'));
    if (q.concurrency === 0) r.status.append(h('span', { class: 'sub', title: 'Run by remote workers' }, ' remote'));
    for (const k of ['queued', 'running', 'succeeded', 'failed', 'canceled']) r[k].textContent = fmtInt(c[k]);
    const rs = rates(list);
    const now = currentRate(list);
    r.rate.replaceChildren(h('span', { class: 'rate' },
      h('span', { class: 'n' }, fmtRate(now)),
      sparkline(rs, { label: `${q.name}: jobs finished per second over the last ${Math.round(rs.length * EVERY / 1000)} s` })));
    const f = failure(list, c);
    r.fail.replaceChildren(f ? h('span', { title: f.window }, pct(f.rate), h('span', { class: 'sub' }, ' ' + f.window)) : '—');
    if (r.button) {
      r.button.textContent = q.paused ? 'Resume' : 'Pause';
      r.button.setAttribute('aria-label', (q.paused ? 'Resume queue ' : 'Pause queue ') + q.name);
      r.button.classList.toggle('primary', q.paused);
    }
  }

  function paintCards(qs) {
    const sum = (k) => qs.reduce((n, q) => n + (q.counts?.[k] || 0), 0);
    const all = [...history.entries()].filter(([n]) => qs.some((q) => q.name === n)).map(([, l]) => l);
    const len = Math.min(...all.map((l) => l.length), KEEP);
    const total = [];
    for (let i = 1; i < len; i++) {
      let r = 0;
      for (const l of all) {
        const a = l[l.length - len + i - 1], b = l[l.length - len + i];
        const dt = (b.t - a.t) / 1000;
        r += dt > 0 ? Math.max(0, b.finished - a.finished) / dt : 0;
      }
      total.push(r);
    }
    const nowRate = all.length ? all.reduce((n, l) => n + (currentRate(l) || 0), 0) : null;
    const card = (label, value, extra) => h('div', { class: 'card' }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, value), extra);
    cards.replaceChildren(
      card('Queued', fmtInt(sum('queued'))),
      card('Running', fmtInt(sum('running'))),
      card('Succeeded', fmtInt(sum('succeeded'))),
      card('Failed', fmtInt(sum('failed'))),
      card('Throughput', fmtRate(all.length && len > 1 ? nowRate : null),
        sparkline(total, { width: 140, height: 26, label: 'All queues: jobs finished per second' })));
  }

  async function poll() {
    try {
      const { queues } = await api.get('/v1/queues');
      if (stopped) return;
      const t = Date.now();
      failures = 0;
      alertSlot.replaceChildren();
      live.className = 'live on';
      live.textContent = 'live';
      if (!queues.length) tbody.replaceChildren(h('tr', {}, h('td', { class: 'empty', colspan: cols.length }, 'No queues are declared.')));
      const seen = new Set();
      for (const q of queues) {
        seen.add(q.name);
        paint(q, record(q, t));
        tbody.append(rows.get(q.name).tr); // keeps the API's (sorted) order
      }
      for (const [n, r] of rows) if (!seen.has(n)) { r.tr.remove(); rows.delete(n); }
      paintCards(queues);
    } catch (e) {
      if (stopped) return;
      failures++;
      live.className = 'live off';
      live.textContent = 'retrying';
      alertSlot.replaceChildren(alertBox(e, 'Could not load the queues'));
    }
    if (!stopped) timer = setTimeout(poll, Math.min(EVERY * 2 ** failures, 30000));
  }

  async function togglePause(name, r) {
    if (r.busy) return;
    const to = r.paused ? 'resume' : 'pause';
    // Not disabled: a disabled button would lose the keyboard focus.
    r.busy = true;
    r.button.setAttribute('aria-busy', 'true');
    try {
      const q = await api.post(`/v1/queues/${encodeURIComponent(name)}/${to}`);
      paint(q, record(q, Date.now()));
      announce(`Queue ${name} ${q.paused ? 'paused' : 'resumed'}.`);
    } catch (e) {
      announce(`Could not ${to} ${name}: ${e.detail || e.message}`, true);
    } finally {
      r.busy = false;
      r.button.removeAttribute('aria-busy');
    }
  }

  poll();
  return () => { stopped = true; clearTimeout(timer); };
}
