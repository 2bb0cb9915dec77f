// The job page: state, progress and history (live while the page is open),
// input, error, a preview of the result, artifacts, and the actions.
import * as api from './api.js';
import {
  h, alertBox, announce, confirmDialog, progressBar, updateProgress, stateBadge, timeEl, fullTime,
  refreshTimes, fmtBytes, fmtDuration, fmtClock, percentOf, fmtPercent,
} from './ui.js';

const PREVIEW_MAX = 1 << 20;       // results up to this size are fetched for a preview
const TEXT_SHOWN = 64 << 10;       // characters of text shown
const IMAGE_MAX = 16 << 20;        // images up to this size are shown inline

const isText = (ct) => /^text\/|[/+]json\b|[/+]xml\b|^application\/(javascript|x-ndjson|yaml|x-yaml|toml|csv)/i.test(ct || '');
const isJSON = (ct) => /[/+]json\b/i.test(ct || '') && !/ndjson/i.test(ct || '');
const isImage = (ct) => /^image\/(png|jpe?g|gif|webp|avif|bmp|svg\+xml)/i.test(ct || '');

export function render(root, id) {
  let job = null;
  let stopped = false;
  let events = null;
  let resultShownFor = 0; // the version whose result is on the page
  const blobURLs = [];

  const title = h('h1', { class: 'jobtitle' }, 'Job ', h('span', { class: 'id' }, id));
  const badge = h('span');
  const live = h('span', { class: 'live' }, 'connecting');
  const alertSlot = h('div');
  const actions = h('div', { class: 'actions', role: 'group', 'aria-label': 'Job actions' });
  const bar = h('div');
  const said = h('p', { class: 'visually-hidden', 'aria-live': 'polite', id: 'progress-live' });
  const details = h('dl', { class: 'kv' });
  const historyList = h('ol', { class: 'history', 'aria-label': 'History' });
  const inputBox = h('dl', { class: 'kv' });
  const errorBox = h('div');
  const resultBox = h('div', { id: 'result' });
  const artifactsBox = h('div', { id: 'artifacts' });
  const artifactsPanel = h('section', { class: 'panel', 'aria-labelledby': 'artifacts-title', hidden: true },
    h('h2', { id: 'artifacts-title' }, 'Artifacts'), h('div', { class: 'panel-body' }, artifactsBox));
  const resultPanel = h('section', { class: 'panel', 'aria-labelledby': 'result-title', hidden: true },
    h('h2', { id: 'result-title' }, 'Result'), h('div', { class: 'panel-body' }, resultBox));

  root.append(
    h('p', { class: 'sub' }, h('a', { href: '#/jobs' }, '← Jobs')),
    h('div', { class: 'head' }, title, badge, h('span', { class: 'spacer' }), live),
    alertSlot,
    h('div', { class: 'grid2' },
      h('div', { class: 'stack' },
        h('section', { class: 'panel', 'aria-labelledby': 'progress-title' },
          h('h2', { id: 'progress-title' }, 'Progress'),
          h('div', { class: 'panel-body stack' }, bar, errorBox, actions), said),
        resultPanel,
        artifactsPanel,
        h('section', { class: 'panel', 'aria-labelledby': 'input-title' },
          h('h2', { id: 'input-title' }, 'Input'),
          h('div', { class: 'panel-body' }, inputBox,
            h('p', { class: 'sub' }, 'The input itself is served to workers only.')))),
      h('div', { class: 'stack' },
        h('section', { class: 'panel', 'aria-labelledby': 'details-title' },
          h('h2', { id: 'details-title' }, 'Details'),
          h('div', { class: 'panel-body' }, details)),
        h('section', { class: 'panel', 'aria-labelledby': 'history-title' },
          h('h2', { id: 'history-title' }, 'History'),
          h('div', { class: 'panel-body' }, historyList)))));

  const liveEvents = []; // {t, text}: what the page saw happen

  function kv(dl, pairs) {
    dl.replaceChildren(...pairs.filter(Boolean).flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
  }

  function paint(j, fromEvent) {
    const before = job;
    job = j;
    root.dataset.state = j.state;
    root.dataset.version = String(j.version);
    badge.replaceChildren(stateBadge(j.state));
    if (!bar.firstChild) bar.append(progressBar(j, true));
    else updateProgress(bar.firstChild, j);
    const pct = percentOf(j);
    said.textContent = j.state === 'running' && pct != null ? `${fmtPercent(pct)} done` : `Job ${j.state}`;
    const dur = j.started_at ? fmtDuration((j.finished_at ? Date.parse(j.finished_at) : Date.now()) - Date.parse(j.started_at)) : '—';
    kv(details, [
      ['Queue', h('a', { href: '#/jobs?queue=' + encodeURIComponent(j.queue) }, j.queue)],
      j.owner && ['Owner', j.owner],
      ['State', stateBadge(j.state)],
      j.state === 'queued' && ['Position', j.position ? `${j.position} ahead` : 'next'],
      ['Attempts', `${j.attempt} of ${j.max_attempts}`],
      ['Priority', String(j.priority)],
      ['Labels', Object.keys(j.labels || {}).length
        ? h('span', { class: 'labels' }, Object.entries(j.labels).map(([k, v]) => h('a', { class: 'chip', href: '#/jobs?label=' + encodeURIComponent(k + ':' + v) }, `${k}:${v}`)))
        : '—'],
      ['Created', fullTime(j.created_at)],
      ['Started', fullTime(j.started_at)],
      ['Finished', fullTime(j.finished_at)],
      ['Run time', dur],
      ['Updated', timeEl(j.updated_at)],
      j.expires_at && ['Expires', timeEl(j.expires_at)],
      ['Version', String(j.version)],
    ]);
    kv(inputBox, [
      ['Content type', h('code', {}, j.input?.content_type || '—')],
      ['Size', fmtBytes(j.input?.size)],
      j.input?.filename && ['File name', j.input.filename],
    ]);
    if (j.error) {
      errorBox.replaceChildren(h('div', { class: 'errbox', role: j.state === 'failed' ? 'alert' : null },
        h('strong', {}, j.state === 'failed' ? 'Failed' : 'Last error'),
        j.error.code ? h('span', { class: 'sub' }, ' · ', h('code', {}, j.error.code)) : null,
        j.state !== 'failed' && j.state !== 'canceled' ? h('span', { class: 'sub' }, ` (attempt ${Math.max(1, j.attempt - (j.state === 'running' ? 1 : 0))})`) : null,
        h('pre', {}, j.error.message || '')));
    } else errorBox.replaceChildren();
    errorBox.hidden = !j.error;
    paintActions(j);
    paintHistory(j);
    if (fromEvent && before && before.state !== j.state) announce(`Job ${j.state}.`);
    if (j.state === 'succeeded' && resultShownFor !== j.version) { resultShownFor = j.version; showResult(j); }
    if (j.state !== 'succeeded') resultPanel.hidden = true;
    if (j.artifacts > 0 && artifactsPanel.dataset.count !== String(j.artifacts) && api.terminal(j.state)) showArtifacts(j);
  }

  function paintActions(j) {
    const keep = actions.contains(document.activeElement) ? document.activeElement.dataset.action : null;
    const b = (action, label, cls, handler) => h('button', { type: 'button', class: 'btn ' + cls, 'data-action': action, onclick: handler }, label);
    const list = [];
    if (j.state === 'queued' || j.state === 'running') list.push(b('cancel', 'Cancel', 'danger', () => act('cancel')));
    if (j.state === 'failed' || j.state === 'canceled') list.push(b('retry', 'Retry', 'primary', () => act('retry')));
    list.push(b('delete', 'Delete', 'danger', () => act('delete')));
    const sig = list.map((x) => x.dataset.action).join();
    if (actions.dataset.sig === sig) return;
    actions.dataset.sig = sig;
    actions.replaceChildren(...list);
    const again = keep && actions.querySelector(`[data-action="${keep}"]`);
    if (again) again.focus();
    else if (keep) actions.firstChild.focus(); // its button went away with the state
  }

  function paintHistory(j) {
    const items = [];
    const add = (t, text, cls) => { if (t) items.push({ t: Date.parse(t), text, cls }); };
    add(j.created_at, `Created on ${j.queue}` + (j.input?.filename ? ` from ${j.input.filename}` : ''));
    add(j.started_at, 'Started (first attempt)');
    if (j.attempt > 1) add(j.updated_at, `Attempt ${j.attempt} of ${j.max_attempts}`);
    if (j.error && j.state !== 'failed') add(j.updated_at, `An attempt failed: ${j.error.message}`);
    add(j.finished_at, j.state === 'failed' ? `Failed: ${j.error?.message || ''}` : j.state.charAt(0).toUpperCase() + j.state.slice(1));
    for (const e of liveEvents) items.push({ t: e.t, text: e.text, cls: 'live-ev' });
    items.sort((a, b) => a.t - b.t);
    historyList.replaceChildren(...items.map((it) => h('li', { class: it.cls || null },
      h('time', { datetime: new Date(it.t).toISOString(), title: new Date(it.t).toLocaleString() }, fmtClock(it.t)),
      h('span', {}, it.text))));
  }

  function describe(ev) {
    const j = ev.job;
    if (ev.event === 'state') return `Now ${j.state}` + (j.state === 'running' && j.attempt ? ` (attempt ${j.attempt})` : '');
    const p = j.progress || {};
    const pct = percentOf(j);
    return 'Progress ' + (p.total ? `${p.current}/${p.total}` : String(p.current)) + (pct != null ? ` (${fmtPercent(pct)})` : '') + (p.message ? ` · ${p.message}` : '');
  }

  async function act(action) {
    const sure = action === 'delete'
      ? await confirmDialog('Delete this job?', 'The job, its input, result and artifacts are removed for good. A running job is interrupted.', 'Delete job')
      : action === 'cancel'
        ? await confirmDialog('Cancel this job?', job.state === 'running' ? 'The running attempt is interrupted and the job ends canceled.' : 'The job will not run.', 'Cancel job')
        : true;
    if (!sure) return;
    try {
      if (action === 'delete') {
        await api.request('DELETE', `/v1/jobs/${encodeURIComponent(id)}`);
        announce('Job deleted.');
        location.hash = '#/jobs';
        return;
      }
      const j = await api.post(`/v1/jobs/${encodeURIComponent(id)}/${action}`);
      alertSlot.replaceChildren();
      if (j.version > job.version) paint(j, false);
      announce(action === 'cancel' ? 'Job canceled.' : 'Job queued again.');
      if (action === 'retry') follow();
    } catch (e) {
      alertSlot.replaceChildren(alertBox(e, `Could not ${action} the job`));
      alertSlot.firstChild.tabIndex = -1;
      alertSlot.firstChild.focus();
    }
  }

  async function showResult(j) {
    resultPanel.hidden = false;
    const r = j.result;
    if (!r) { resultBox.replaceChildren(h('p', { class: 'sub' }, 'The job succeeded without a result.')); return; }
    const path = `/v1/jobs/${encodeURIComponent(j.id)}/result`;
    const name = resultName(j);
    const dl = h('button', { type: 'button', class: 'btn small', onclick: () => save(path, name) }, 'Download');
    const meta = h('p', { class: 'sub' }, h('code', {}, r.content_type), ` · ${fmtBytes(r.size)} `, dl);
    const canText = isText(r.content_type) && r.size <= PREVIEW_MAX;
    const canImage = isImage(r.content_type) && r.size <= IMAGE_MAX;
    if (!canText && !canImage) { resultBox.replaceChildren(meta, h('p', { class: 'sub' }, 'No preview for this type or size.')); return; }
    resultBox.replaceChildren(meta, h('p', { class: 'sub' }, 'Loading the preview…'));
    try {
      const res = await api.request('GET', path);
      if (stopped) return;
      if (canImage) {
        const u = URL.createObjectURL(await res.blob());
        blobURLs.push(u);
        resultBox.replaceChildren(meta, h('img', { class: 'preview', src: u, alt: 'The result image' }));
        return;
      }
      let text = await res.text();
      if (isJSON(r.content_type)) {
        try { text = JSON.stringify(JSON.parse(text), null, 2); } catch { /* shown as sent */ }
      }
      const cut = text.length > TEXT_SHOWN;
      resultBox.replaceChildren(meta,
        h('pre', { class: 'preview', tabindex: '0', 'aria-label': 'Result preview' }, cut ? text.slice(0, TEXT_SHOWN) : text),
        cut ? h('p', { class: 'sub' }, `Truncated: the first ${fmtBytes(TEXT_SHOWN)} of ${fmtBytes(r.size)} are shown; download it for the rest.`) : '');
    } catch (e) {
      resultBox.replaceChildren(meta, alertBox(e, 'Could not load the result'));
    }
  }

  async function showArtifacts(j) {
    artifactsPanel.hidden = false;
    artifactsPanel.dataset.count = String(j.artifacts);
    try {
      const { artifacts } = await api.get(`/v1/jobs/${encodeURIComponent(j.id)}/artifacts`);
      if (stopped) return;
      if (!artifacts.length) { artifactsBox.replaceChildren(h('p', { class: 'sub' }, 'None.')); return; }
      artifactsBox.replaceChildren(h('table', { class: 'cardy' },
        h('caption', { class: 'visually-hidden' }, 'Artifacts of the job'),
        h('thead', {}, h('tr', {}, ['Name', 'Type', 'Size', ''].map((c) => h('th', { scope: 'col' }, c || h('span', { class: 'visually-hidden' }, 'Download'))))),
        h('tbody', {}, artifacts.map((a) => h('tr', { 'data-artifact': a.name },
          h('td', { class: 'wide', 'data-label': 'Name' }, h('code', {}, a.name)),
          h('td', { 'data-label': 'Type' }, a.content_type),
          h('td', { 'data-label': 'Size' }, fmtBytes(a.size)),
          h('td', {}, h('button', {
            type: 'button', class: 'btn small', 'aria-label': 'Download ' + a.name,
            onclick: () => save(`/v1/jobs/${encodeURIComponent(j.id)}/artifacts/${encodeURIComponent(a.name)}`, a.name),
          }, 'Download')))))));
    } catch (e) {
      artifactsBox.replaceChildren(alertBox(e, 'Could not list the artifacts'));
    }
  }

  async function save(path, name) {
    try {
      await api.download(path, name);
      announce(`Downloaded ${name}.`);
    } catch (e) {
      announce(`Could not download ${name}: ${e.detail || e.message}`, true);
    }
  }

  function follow() {
    if (events) events.close();
    if (api.terminal(job.state)) { live.className = 'live'; live.textContent = 'finished'; return; }
    events = api.stream(`/v1/jobs/${encodeURIComponent(id)}/events`, {
      resume: true,
      onEvent: (ev) => {
        const j = ev.job;
        if (!j || j.version <= job.version && !(ev.event === 'state' && j.state !== job.state)) return api.terminal(j?.state);
        liveEvents.push({ t: Date.now(), text: describe(ev) });
        if (liveEvents.length > 200) liveEvents.splice(0, liveEvents.length - 200);
        paint(j, true);
        return api.terminal(j.state);
      },
      onStatus: (s) => {
        if (stopped) return;
        if (s === 'closed') {
          live.className = 'live';
          live.textContent = api.terminal(job.state) ? 'finished' : 'not live';
          if (!api.terminal(job.state)) reload();
          return;
        }
        live.className = 'live ' + (s === 'live' ? 'on' : 'off');
        live.textContent = s === 'live' ? 'live' : 'reconnecting';
      },
    });
  }

  async function reload() {
    try {
      const j = await api.get(`/v1/jobs/${encodeURIComponent(id)}`);
      if (!stopped && (!job || j.version >= job.version)) paint(j, !!job);
    } catch (e) {
      if (stopped) return;
      if (e.status === 404) {
        root.replaceChildren(
          h('p', { class: 'sub' }, h('a', { href: '#/jobs' }, '← Jobs')),
          h('h1', {}, 'No such job'),
          h('p', {}, `There is no job ${id}, or it is not yours to see. Finished jobs are removed after their queue's retention.`));
        return;
      }
      alertSlot.replaceChildren(alertBox(e, 'Could not load the job'));
    }
  }

  (async () => {
    await reload();
    if (job && !stopped) follow();
  })();
  const tick = setInterval(() => {
    refreshTimes(root);
    if (job && job.state === 'running') paint(job, false); // its run time
  }, 10000);
  return () => {
    stopped = true;
    if (events) events.close();
    clearInterval(tick);
    for (const u of blobURLs) URL.revokeObjectURL(u);
  };
}

// resultName is a file name for a downloaded result: the input's, with
// the extension of the result's type.
function resultName(j) {
  const ext = {
    'application/json': 'json', 'text/plain': 'txt', 'text/markdown': 'md', 'text/html': 'html', 'text/csv': 'csv',
    'image/png': 'png', 'image/jpeg': 'jpg', 'image/webp': 'webp', 'image/gif': 'gif', 'image/svg+xml': 'svg',
    'application/pdf': 'pdf', 'application/zip': 'zip',
  }[(j.result?.content_type || '').split(';')[0].trim()] || 'bin';
  const base = (j.input?.filename || '').replace(/\.[^.]*$/, '') || 'result-' + j.id.slice(0, 8);
  return `${base}.${ext}`;
}
