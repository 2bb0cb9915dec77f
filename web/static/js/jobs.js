// The jobs list: filters, pages by the API's cursor, and live updates from
// GET /v1/events: rows change as their jobs progress, and new jobs that
// match the filters appear at the top.
import * as api from './api.js';
import { h, alertBox, progressBar, updateProgress, stateBadge, timeEl, refreshTimes, shortId } from './ui.js';

const LIMIT = 50;
const MAX_ROWS = 250; // live insertions stop here; the pager shows the rest

export function render(root, params) {
  const f = {
    queue: params.get('queue') || '',
    state: params.get('state') || '',
    label: params.get('label') || '',
    owner: params.get('owner') || '',
  };
  const showOwner = api.session.admin && !api.session.open;

  // Filters
  const queueSel = h('select', { id: 'f-queue', name: 'queue' }, h('option', { value: '' }, 'All queues'));
  if (f.queue) queueSel.append(h('option', { value: f.queue, selected: true }, f.queue));
  const stateSel = h('select', { id: 'f-state', name: 'state' },
    h('option', { value: '' }, 'All states'),
    h('option', { value: 'queued,running' }, 'Active (queued, running)'),
    api.STATES.map((s) => h('option', { value: s }, s)),
    h('option', { value: 'failed,canceled' }, 'Failed or canceled'));
  stateSel.value = f.state;
  if (stateSel.value !== f.state) { stateSel.append(h('option', { value: f.state }, f.state)); stateSel.value = f.state; }
  const labelIn = h('input', { id: 'f-label', name: 'label', placeholder: 'key:value', value: f.label, autocomplete: 'off', spellcheck: 'false' });
  const ownerIn = showOwner ? h('input', { id: 'f-owner', name: 'owner', placeholder: 'any owner', value: f.owner, autocomplete: 'off' }) : null;
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter jobs' },
    h('div', { class: 'field' }, h('label', { for: 'f-queue' }, 'Queue'), queueSel),
    h('div', { class: 'field' }, h('label', { for: 'f-state' }, 'State'), stateSel),
    h('div', { class: 'field' }, h('label', { for: 'f-label' }, 'Label'), labelIn),
    ownerIn && h('div', { class: 'field' }, h('label', { for: 'f-owner' }, 'Owner'), ownerIn),
    h('div', { class: 'actions' },
      h('button', { type: 'submit', class: 'btn primary' }, 'Filter'),
      h('button', { type: 'reset', class: 'btn ghost' }, 'Clear')));

  const cols = ['Job', 'Queue', showOwner && 'Owner', 'State', 'Progress', 'Attempt', 'Created', 'Updated'].filter(Boolean);
  const tbody = h('tbody');
  const live = h('span', { class: 'live' }, 'connecting');
  const alertSlot = h('div');
  // Not a live region: it changes with every job that appears.
  const status = h('p', { class: 'sub', id: 'jobs-status' });
  const prev = h('button', { type: 'button', class: 'btn small', disabled: true }, '← Newer');
  const next = h('button', { type: 'button', class: 'btn small', disabled: true }, 'Older →');
  const pageNo = h('span', { class: 'sub' });
  const submitLink = h('a', { class: 'btn', href: '#/submit' + (f.queue ? '?queue=' + encodeURIComponent(f.queue) : '') }, 'Submit a job');
  const table = h('table', { class: 'cardy jobs', 'aria-describedby': 'jobs-status' },
    h('caption', { class: 'visually-hidden' }, 'Jobs, newest first'),
    h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col' }, c)))),
    tbody);
  root.append(
    h('div', { class: 'head' },
      h('h1', {}, 'Jobs'),
      h('span', { class: 'spacer' }),
      live,
      submitLink),
    alertSlot,
    h('section', { class: 'panel', 'aria-label': 'Jobs' },
      form,
      h('div', { class: 'table-wrap' }, table),
      h('div', { class: 'pager' }, h('div', { class: 'actions' }, prev, next), pageNo, status)));

  api.get('/v1/queues').then(({ queues }) => {
    for (const q of queues) if (q.name !== f.queue) queueSel.append(h('option', { value: q.name }, q.name));
  }).catch(() => {});

  // State of the list
  let cursors = ['']; // the cursor of each page seen, for going back
  let nextCursor = '';
  const rows = new Map(); // id -> {tr, job, cells}
  let loadSeq = 0;
  let stopped = false;

  const states = () => (f.state ? f.state.split(',') : []);
  const labelKV = () => {
    const i = f.label.indexOf(':');
    return i > 0 ? [f.label.slice(0, i), f.label.slice(i + 1)] : null;
  };
  function matches(j) {
    if (f.queue && j.queue !== f.queue) return false;
    const st = states();
    if (st.length && !st.includes(j.state)) return false;
    const kv = labelKV();
    if (kv && (j.labels || {})[kv[0]] !== kv[1]) return false;
    if (f.owner && j.owner !== f.owner) return false;
    return true;
  }

  function query(cursor) {
    const q = new URLSearchParams();
    for (const k of ['queue', 'state', 'label', 'owner']) if (f[k]) q.set(k, f[k]);
    q.set('limit', String(LIMIT));
    if (cursor) q.set('cursor', cursor);
    return q;
  }

  function makeRow(j) {
    const link = h('a', { href: '#/jobs/' + encodeURIComponent(j.id), class: 'id', title: j.id }, shortId(j.id));
    const cells = {
      state: h('td', { 'data-label': 'State' }),
      progress: h('td', { class: 'wide', 'data-label': 'Progress' }, progressBar(j)),
      attempt: h('td', { 'data-label': 'Attempt' }),
      updated: h('td', { 'data-label': 'Updated' }),
    };
    const tr = h('tr', { 'data-id': j.id },
      h('td', { class: 'wide', 'data-label': 'Job' }, link),
      h('td', { 'data-label': 'Queue' }, j.queue),
      showOwner && h('td', { 'data-label': 'Owner' }, j.owner || '—'),
      cells.state, cells.progress, cells.attempt,
      h('td', { 'data-label': 'Created' }, timeEl(j.created_at)),
      cells.updated);
    const r = { tr, job: j, cells };
    paintRow(r, j);
    return r;
  }

  function paintRow(r, j) {
    r.job = j;
    r.tr.dataset.state = j.state;
    r.cells.state.replaceChildren(stateBadge(j.state));
    updateProgress(r.cells.progress.firstChild, j);
    r.cells.attempt.textContent = j.attempt ? `${j.attempt} of ${j.max_attempts}` : '—';
    r.cells.updated.replaceChildren(timeEl(j.updated_at));
  }

  function empty() {
    if (rows.size) return;
    tbody.replaceChildren(h('tr', {}, h('td', { class: 'empty', colspan: cols.length },
      Object.values(f).some(Boolean) ? 'No jobs match these filters.' : 'No jobs yet. ',
      Object.values(f).some(Boolean) ? null : h('a', { href: '#/submit' }, 'Submit one.'))));
  }

  // setRows shows a page as loaded, keeping in place the rows of jobs
  // that are still on it. Rows that events inserted while this page was
  // being loaded stay too: the page was read before they existed.
  function setRows(list, seq) {
    const keep = new Map();
    for (const j of list) {
      let r = rows.get(j.id);
      if (r) { if (j.version >= r.job.version) paintRow(r, j); } else r = makeRow(j);
      keep.set(j.id, r);
    }
    for (const [id, r] of rows) if (!keep.has(id) && r.liveSeq === seq) keep.set(id, r);
    const sorted = [...keep.entries()].sort((a, b) => (a[0] < b[0] ? 1 : -1));
    rows.clear();
    for (const [id, r] of sorted) rows.set(id, r);
    tbody.replaceChildren(...sorted.map(([, r]) => r.tr));
    empty();
  }

  function showCount() {
    const n = rows.size;
    status.textContent = `${n} job${n === 1 ? '' : 's'} shown` + (nextCursor ? ', more on the next pages' : '');
  }

  async function load() {
    const seq = ++loadSeq;
    const page = cursors.length;
    try {
      const res = await api.get('/v1/jobs?' + query(cursors[cursors.length - 1]));
      if (seq !== loadSeq || stopped) return;
      alertSlot.replaceChildren();
      nextCursor = res.next_cursor || '';
      setRows(res.jobs, seq);
      prev.disabled = cursors.length <= 1;
      next.disabled = !nextCursor;
      pageNo.textContent = `Page ${page}`;
      showCount();
      if (!root.dataset.loaded) {
        root.dataset.loaded = 'true';
        // For measurements of how soon the list is usable (User Timing).
        performance.mark('docket:jobs-rendered');
      }
    } catch (e) {
      if (seq !== loadSeq || stopped) return;
      alertSlot.replaceChildren(alertBox(e, 'Could not load the jobs'));
    }
  }

  // A job that starts to match, or is new, goes where its id (its creation
  // time) puts it, if that is within the page on screen.
  function onEvent(ev) {
    const j = ev.job;
    if (!j) return;
    const r = rows.get(j.id);
    if (r) {
      if (j.version > r.job.version) paintRow(r, j);
      return;
    }
    if (!matches(j) || rows.size >= MAX_ROWS) return;
    const ids = [...rows.keys()];
    const first = ids[0], last = ids[ids.length - 1];
    const onFirst = cursors.length === 1;
    if (!onFirst && first && j.id > first) return;
    if (nextCursor && last && j.id < last) return;
    const nr = makeRow(j);
    nr.liveSeq = loadSeq;
    nr.tr.classList.add('fresh');
    if (!rows.size) tbody.replaceChildren();
    const after = ids.find((id) => id < j.id);
    if (after) tbody.insertBefore(nr.tr, rows.get(after).tr);
    else tbody.append(nr.tr);
    const entries = [...rows.entries(), [j.id, nr]].sort((a, b) => (a[0] < b[0] ? 1 : -1));
    rows.clear();
    for (const [id, x] of entries) rows.set(id, x);
    showCount();
  }

  let events = null;
  let streamQueue = null;
  // follow (re)opens the event stream for the queue filtered on. The page
  // is loaded once the stream is open, so that no change falls between
  // the two; a stream slow to open does not hold the list up for long.
  let fallback = 0;
  function follow() {
    if (events && streamQueue === f.queue) return false;
    if (events) events.close();
    streamQueue = f.queue;
    clearTimeout(fallback);
    fallback = setTimeout(load, 400);
    events = api.stream('/v1/events' + (f.queue ? '?queue=' + encodeURIComponent(f.queue) : ''), {
      onEvent,
      // Whatever happened while the stream was (re)connecting is read anew.
      onOpen: () => { clearTimeout(fallback); load(); },
      onStatus: (s) => {
        if (s === 'closed' && stopped) return;
        live.className = 'live ' + (s === 'live' ? 'on' : 'off');
        live.textContent = s === 'live' ? 'live' : s === 'closed' ? 'not live' : 'reconnecting';
      },
    });
    return true;
  }

  // Filters apply in place: the address follows them (for reloads and
  // links) without a new history entry or moving the focus.
  function apply() {
    f.queue = queueSel.value;
    f.state = stateSel.value;
    f.label = labelIn.value.trim();
    f.owner = ownerIn ? ownerIn.value.trim() : '';
    const q = new URLSearchParams();
    for (const k of ['queue', 'state', 'label', 'owner']) if (f[k]) q.set(k, f[k]);
    history.replaceState(null, '', '#/jobs' + (String(q) ? '?' + q : ''));
    submitLink.href = '#/submit' + (f.queue ? '?queue=' + encodeURIComponent(f.queue) : '');
    cursors = [''];
    rows.clear();
    tbody.replaceChildren();
    if (!follow()) load();
  }
  form.addEventListener('submit', (e) => { e.preventDefault(); apply(); });
  form.addEventListener('reset', (e) => { e.preventDefault(); queueSel.value = ''; stateSel.value = ''; labelIn.value = ''; if (ownerIn) ownerIn.value = ''; apply(); });
  queueSel.addEventListener('change', apply);
  stateSel.addEventListener('change', apply);
  next.addEventListener('click', () => { if (nextCursor) { cursors.push(nextCursor); load(); tbody.closest('section').scrollIntoView({ block: 'start' }); } });
  prev.addEventListener('click', () => { if (cursors.length > 1) { cursors.pop(); load(); } });

  follow();
  const tick = setInterval(() => refreshTimes(tbody), 10000);
  return () => { stopped = true; events.close(); clearInterval(tick); clearTimeout(fallback); };
}
