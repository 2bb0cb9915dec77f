// DOM helpers and formatting shared by the views. Everything shown is set
// as text, never as markup, so that what jobs carry (labels, messages,
// results) cannot inject anything into the page.

// h builds an element: h('a', {href: '#/x', class: 'btn'}, 'text', child…).
// Attributes starting with "on" are event listeners; null and false skip.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c == null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

const SVG = 'http://www.w3.org/2000/svg';
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  for (const c of children) if (c) el.append(c);
  return el;
}

// announce shows a short message that screen readers read too (the toast
// region is aria-live); bad ones stay longer.
export function announce(text, bad = false) {
  const box = document.getElementById('toasts');
  const t = h('div', { class: 'toast' + (bad ? ' bad' : '') }, text);
  box.append(t);
  setTimeout(() => t.remove(), bad ? 8000 : 4000);
}

// alertBox is an error shown where it happened, from a Problem's detail.
export function alertBox(err, what = '') {
  const detail = err?.detail || err?.message || String(err);
  return h('div', { class: 'alert', role: 'alert' },
    h('strong', {}, what ? what + ': ' : (err?.title ? err.title + ': ' : 'Error: ')), detail);
}

// confirmDialog asks before a destructive action, in a modal <dialog>
// (which traps focus and closes on Escape); resolves true to go ahead.
export function confirmDialog(title, text, action) {
  return new Promise((resolve) => {
    const opener = document.activeElement;
    const ok = h('button', { type: 'button', class: 'btn danger solid', 'data-confirm': '' }, action);
    const no = h('button', { type: 'button', class: 'btn' }, 'Keep it');
    const d = h('dialog', { 'aria-labelledby': 'dlg-title', 'aria-describedby': 'dlg-text' },
      h('h2', { id: 'dlg-title' }, title),
      h('p', { id: 'dlg-text' }, text),
      h('div', { class: 'actions' }, no, ok));
    let answer = false;
    ok.addEventListener('click', () => { answer = true; d.close(); });
    no.addEventListener('click', () => d.close());
    d.addEventListener('close', () => {
      d.remove();
      if (opener && opener.isConnected) opener.focus();
      resolve(answer);
    });
    document.body.append(d);
    d.showModal();
    no.focus(); // the safe choice has the focus
  });
}

// stateBadge is a job state (or a queue's paused/active) as a colored pill.
export function stateBadge(state) {
  return h('span', { class: 'badge ' + state, 'data-state': state }, state);
}

// progressBar renders a job's progress; updateProgress changes it in place
// (the list and the job page update it from events).
export function progressBar(job, big = false) {
  const fill = h('div', { class: 'bar-fill' });
  const track = h('div', { class: 'bar-track', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100' }, fill);
  const text = h('div', { class: 'ptext' });
  const el = h('div', { class: 'progress' + (big ? ' big' : '') }, track, text);
  updateProgress(el, job);
  return el;
}

export function percentOf(job) {
  if (job.state === 'succeeded') return 100;
  const p = job.progress?.percent;
  return typeof p === 'number' ? p : null;
}

export function updateProgress(el, job) {
  const track = el.querySelector('.bar-track');
  const fill = el.querySelector('.bar-fill');
  const text = el.querySelector('.ptext');
  const pct = percentOf(job);
  const running = job.state === 'running';
  el.className = 'progress ' + job.state + (el.classList.contains('big') ? ' big' : '') +
    (running && pct == null ? ' unknown' : '');
  fill.style.width = (pct ?? (job.state === 'queued' ? 0 : job.state === 'running' ? 0 : 100)) + '%';
  if (pct == null) track.removeAttribute('aria-valuenow');
  else track.setAttribute('aria-valuenow', String(Math.round(pct)));
  el.dataset.percent = pct == null ? '' : String(pct);
  const p = job.progress || {};
  let label;
  if (job.state === 'queued') label = job.position > 0 ? `waiting, ${job.position} ahead` : 'waiting';
  else if (pct != null) label = fmtPercent(pct) + (p.message ? ' · ' + p.message : '');
  else label = p.message || (running ? 'running' : job.state);
  if (job.state === 'failed' && job.error?.message) label = 'failed · ' + job.error.message;
  if (job.state === 'succeeded' && pct === 100 && !p.message) label = 'done';
  text.textContent = label;
  track.setAttribute('aria-valuetext', label);
  track.setAttribute('aria-label', 'Progress of job ' + shortId(job.id));
}

export function fmtPercent(p) {
  return (p >= 10 || p === 0 ? Math.round(p) : p.toFixed(1)) + '%';
}

// shortId is the random end of a UUIDv7: its start is the creation time,
// the same for every job of the same moment.
export const shortId = (id) => '…' + (id || '').slice(-12);

export function fmtBytes(n) {
  if (n == null) return '—';
  if (n < 1024) return n + ' B';
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (v >= 100 ? v.toFixed(0) : v.toFixed(1)) + ' ' + units[i];
}

export function fmtDuration(ms) {
  if (ms == null || ms < 0) return '—';
  if (ms < 1000) return Math.round(ms) + ' ms';
  const s = ms / 1000;
  if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + ' s';
  const m = Math.floor(s / 60), rs = Math.round(s % 60);
  if (m < 60) return `${m} min ${rs} s`;
  const hh = Math.floor(m / 60);
  return `${hh} h ${m % 60} min`;
}

export function fmtAgo(iso, now = Date.now()) {
  if (!iso) return '—';
  const d = now - Date.parse(iso);
  const s = Math.abs(d) / 1000;
  let t;
  if (s < 5) return 'just now';
  if (s < 60) t = Math.round(s) + ' s';
  else if (s < 3600) t = Math.round(s / 60) + ' min';
  else if (s < 86400) t = Math.round(s / 3600) + ' h';
  else t = Math.round(s / 86400) + ' d';
  return d < 0 ? 'in ' + t : t + ' ago';
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const dateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

export function fmtClock(t) { return timeFmt.format(t instanceof Date ? t : new Date(t)); }

// timeEl is a timestamp shown relative ("3 min ago") with the full date in
// its datetime and title; refreshTimes keeps the relative text current.
export function timeEl(iso) {
  if (!iso) return h('span', { class: 'sub' }, '—');
  return h('time', { datetime: iso, title: dateFmt.format(new Date(iso)), 'data-ago': '' }, fmtAgo(iso));
}
export function fullTime(iso) {
  if (!iso) return h('span', { class: 'sub' }, '—');
  return h('time', { datetime: iso }, dateFmt.format(new Date(iso)));
}

export function refreshTimes(root) {
  const now = Date.now();
  for (const t of root.querySelectorAll('time[data-ago]')) t.textContent = fmtAgo(t.getAttribute('datetime'), now);
}

// sparkline draws values as an inline SVG line with a faint area under it.
export function sparkline(values, { width = 120, height = 28, label = '' } = {}) {
  const el = svg('svg', { class: 'spark', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': label });
  if (label) el.append(svg('title', {}, document.createTextNode(label)));
  if (values.length < 2) {
    el.append(svg('polyline', { points: `0,${height - 1} ${width},${height - 1}`, opacity: '0.35' }));
    return el;
  }
  const max = Math.max(...values, 1e-9);
  const step = width / (values.length - 1);
  const pts = values.map((v, i) => `${(i * step).toFixed(1)},${(height - 1 - (v / max) * (height - 3)).toFixed(1)}`);
  el.append(svg('polygon', { points: `0,${height} ${pts.join(' ')} ${width},${height}` }));
  el.append(svg('polyline', { points: pts.join(' ') }));
  return el;
}

// fmtRate shows jobs per second with sensible precision.
export function fmtRate(r) {
  if (r == null) return '—';
  if (r === 0) return '0/s';
  if (r < 0.1) return (r * 60).toFixed(1) + '/min';
  return (r < 10 ? r.toFixed(1) : Math.round(r)) + '/s';
}

export function fmtInt(n) { return (n ?? 0).toLocaleString(); }

// setTitle names the view in the tab's title and puts the focus on its
// heading, so that screen readers announce the new page.
export function focusHeading(root) {
  const h1 = root.querySelector('h1');
  if (h1) {
    h1.tabIndex = -1;
    h1.focus({ preventScroll: true });
    document.title = h1.textContent + ' · docket';
  }
}
