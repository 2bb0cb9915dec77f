// Submitting a job: a queue, an input (a file, JSON or text) and a few
// options, then on to the new job's page.
import * as api from './api.js';
import { h, alertBox } from './ui.js';

export function render(root, params) {
  const want = params.get('queue') || '';
  const queueSel = h('select', { id: 's-queue', name: 'queue', required: true }, h('option', { value: '' }, 'Loading…'));
  const kinds = [['file', 'A file'], ['json', 'JSON'], ['text', 'Text']];
  const kindInputs = kinds.map(([v, label]) => h('label', {},
    h('input', { type: 'radio', name: 'kind', value: v, checked: v === 'json' }), label));
  const file = h('input', { id: 's-file', name: 'file', type: 'file' });
  const text = h('textarea', { id: 's-text', name: 'text', spellcheck: 'false', 'aria-describedby': 's-text-hint', placeholder: '{"steps": 5, "sleep": "500ms"}' });
  const ctype = h('input', { id: 's-ctype', name: 'content_type', value: 'text/plain', autocomplete: 'off', spellcheck: 'false' });
  const priority = h('input', { id: 's-priority', name: 'priority', type: 'number', min: '-1000', max: '1000', step: '1', inputmode: 'numeric', placeholder: '0' });
  const delay = h('input', { id: 's-delay', name: 'delay', placeholder: 'e.g. 30s, 10m', autocomplete: 'off' });
  const attempts = h('input', { id: 's-attempts', name: 'max_attempts', type: 'number', min: '1', max: '100', step: '1', inputmode: 'numeric', placeholder: 'the queue\u2019s' });
  const labels = h('input', { id: 's-labels', name: 'labels', placeholder: 'doc:a, batch:7', autocomplete: 'off', spellcheck: 'false', 'aria-describedby': 's-labels-hint' });
  const errSlot = h('div', { id: 'submit-error' });
  const button = h('button', { type: 'submit', class: 'btn primary' }, 'Submit job');

  const fileField = h('div', { class: 'field' }, h('label', { for: 's-file' }, 'File'), file,
    h('span', { class: 'hint' }, 'Sent as a multipart form; the job keeps its name and type.'));
  const textField = h('div', { class: 'field' }, h('label', { for: 's-text' }, 'Input'), text,
    h('span', { class: 'hint', id: 's-text-hint' }, 'The body of the job, stored as it is.'));
  const ctypeField = h('div', { class: 'field' }, h('label', { for: 's-ctype' }, 'Content type'), ctype);

  const form = h('form', { class: 'form', 'aria-labelledby': 'submit-title', novalidate: true },
    errSlot,
    h('div', { class: 'field' }, h('label', { for: 's-queue' }, 'Queue'), queueSel),
    h('fieldset', {}, h('legend', {}, 'Input'), h('div', { class: 'choices' }, kindInputs)),
    fileField, textField, ctypeField,
    h('details', {},
      h('summary', {}, 'Options'),
      h('div', { class: 'row2' },
        h('div', { class: 'field' }, h('label', { for: 's-priority' }, 'Priority'), priority),
        h('div', { class: 'field' }, h('label', { for: 's-delay' }, 'Delay'), delay),
        h('div', { class: 'field' }, h('label', { for: 's-attempts' }, 'Max attempts'), attempts),
        h('div', { class: 'field' }, h('label', { for: 's-labels' }, 'Labels'), labels,
          h('span', { class: 'hint', id: 's-labels-hint' }, 'key:value, separated by commas')))),
    h('div', { class: 'actions' }, button));

  root.append(
    h('div', { class: 'head' }, h('h1', { id: 'submit-title' }, 'Submit a job')),
    h('section', { class: 'panel narrow' }, form));

  const kind = () => form.elements.kind.value;
  function showKind() {
    const k = kind();
    fileField.hidden = k !== 'file';
    textField.hidden = k === 'file';
    ctypeField.hidden = k !== 'text';
  }
  for (const r of form.querySelectorAll('input[name=kind]')) r.addEventListener('change', showKind);
  showKind();

  api.get('/v1/queues').then(({ queues }) => {
    queueSel.replaceChildren(...queues.map((q) => h('option', { value: q.name }, q.name + (q.paused ? ' (paused)' : ''))));
    if (!queues.length) queueSel.append(h('option', { value: '' }, 'No queues'));
    if (want && queues.some((q) => q.name === want)) queueSel.value = want;
  }).catch((e) => errSlot.replaceChildren(alertBox(e, 'Could not load the queues')));

  function fail(message, focus) {
    errSlot.replaceChildren(h('div', { class: 'alert', role: 'alert' }, message));
    if (focus) focus.focus();
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    if (priority.value.trim()) q.set('priority', priority.value.trim());
    if (delay.value.trim()) q.set('delay', delay.value.trim());
    if (attempts.value.trim()) q.set('max_attempts', attempts.value.trim());
    for (const l of labels.value.split(',').map((s) => s.trim()).filter(Boolean)) {
      if (!l.includes(':')) return fail(`Label "${l}" is not key:value.`, labels);
      q.append('label', l);
    }
    if (!queueSel.value) return fail('Pick a queue.', queueSel);
    let body, headers = {};
    const k = kind();
    if (k === 'file') {
      if (!file.files.length) return fail('Choose a file.', file);
      body = new FormData();
      body.append('file', file.files[0], file.files[0].name);
    } else if (k === 'json') {
      try { JSON.parse(text.value); } catch (ex) { return fail('This is not valid JSON: ' + ex.message, text); }
      body = text.value;
      headers['Content-Type'] = 'application/json';
    } else {
      body = text.value;
      headers['Content-Type'] = ctype.value.trim() || 'text/plain';
    }
    button.disabled = true;
    button.textContent = 'Submitting…';
    try {
      const path = `/v1/queues/${encodeURIComponent(queueSel.value)}/jobs` + (String(q) ? '?' + q : '');
      const j = await api.post(path, { body, headers });
      location.hash = '#/jobs/' + encodeURIComponent(j.id);
    } catch (ex) {
      errSlot.replaceChildren(alertBox(ex, 'The job was not submitted'));
      errSlot.firstChild.tabIndex = -1;
      errSlot.firstChild.focus();
    } finally {
      button.disabled = false;
      button.textContent = 'Submit job';
    }
  });
}
