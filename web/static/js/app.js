// The dashboard's shell: who is signed in, the navigation, and the router.
// Routes are URL fragments (#/jobs/ID) so that the server serves only one
// page, at /, and deep links still work after a reload.
import * as api from './api.js';
import { h, alertBox, focusHeading } from './ui.js';
import * as queues from './queues.js';
import * as jobs from './jobs.js';
import * as job from './job.js';
import * as submit from './submit.js';

const main = document.getElementById('main');
let cleanup = null;
let ready = false;

function route() {
  const hash = location.hash.replace(/^#/, '') || '/queues';
  const [path, query = ''] = hash.split('?');
  const params = new URLSearchParams(query);
  const parts = path.split('/').filter(Boolean);
  if (parts[0] === 'jobs' && parts[1]) return { name: 'jobs', view: job, args: [decodeURIComponent(parts[1])] };
  if (parts[0] === 'jobs') return { name: 'jobs', view: jobs, args: [params] };
  if (parts[0] === 'submit') return { name: 'submit', view: submit, args: [params] };
  return { name: 'queues', view: queues, args: [params] };
}

function show() {
  if (!ready) return;
  if (cleanup) { cleanup(); cleanup = null; }
  const r = route();
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === r.name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const root = h('div', { class: 'view' });
  main.replaceChildren(root);
  try {
    cleanup = r.view.render(root, ...r.args) || null;
  } catch (e) {
    root.replaceChildren(alertBox(e, 'This page failed'));
    console.error(e);
  }
  focusHeading(root);
}

function showIdentity() {
  const name = document.getElementById('who-name');
  if (api.session.open) {
    name.replaceChildren(h('span', { class: 'badge paused', title: 'No tokens are configured: every caller is an admin (loopback only)' }, 'open mode'));
  } else {
    name.replaceChildren('Signed in as ', h('strong', {}, api.session.owner || 'unknown'),
      api.session.admin ? ' (admin)' : '');
  }
  document.getElementById('signout').hidden = api.session.open;
  document.getElementById('who').hidden = false;
  document.getElementById('nav').hidden = false;
}

function signInForm(message) {
  ready = false;
  if (cleanup) { cleanup(); cleanup = null; }
  document.getElementById('nav').hidden = true;
  document.getElementById('who').hidden = true;
  const input = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false', required: true, 'aria-describedby': 'token-hint' });
  const err = h('div', { id: 'signin-error' });
  if (message) err.replaceChildren(h('div', { class: 'alert', role: 'alert' }, message));
  const button = h('button', { type: 'submit', class: 'btn primary' }, 'Sign in');
  // POST: were the script to fail, a native submit must not put the
  // token in the address (and the server's logs).
  const form = h('form', { class: 'form', method: 'post', 'aria-labelledby': 'signin-title' },
    err,
    h('div', { class: 'field' },
      h('label', { for: 'token' }, 'API token'),
      input,
      h('span', { class: 'hint', id: 'token-hint' }, 'A bearer token from the server\u2019s configuration. It is kept in this tab only and forgotten when the tab closes.')),
    h('div', { class: 'actions' }, button));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    button.disabled = true;
    try {
      await api.signIn(input.value.trim());
      start();
    } catch (ex) {
      const why = ex.status === 401 ? 'This token is not known to the server.'
        : ex.status === 403 ? 'This token cannot read jobs (it needs the read or admin scope).'
          : ex.detail || ex.message;
      err.replaceChildren(h('div', { class: 'alert', role: 'alert' }, why));
      input.select();
      input.focus();
    } finally {
      button.disabled = false;
    }
  });
  main.replaceChildren(h('section', { class: 'signin panel', 'aria-labelledby': 'signin-title' },
    h('div', { class: 'panel-body' },
      h('h1', { id: 'signin-title' }, 'Sign in to docket'),
      h('p', { class: 'sub' }, 'Queues, jobs and their results, live.')),
    form));
  document.title = 'Sign in · docket';
  input.focus();
}

function start() {
  ready = true;
  showIdentity();
  show();
}

async function boot() {
  api.setUnauthorizedHandler(() => {
    api.signOut();
    signInForm('The server no longer accepts this token: sign in again.');
  });
  document.getElementById('signout').addEventListener('click', () => {
    api.signOut();
    signInForm('Signed out.');
  });
  // The skip link targets #main, which is not a route.
  document.querySelector('.skip').addEventListener('click', (e) => {
    e.preventDefault();
    main.focus();
  });
  window.addEventListener('hashchange', show);
  try {
    const how = await api.detect();
    if (how === 'sign-in') signInForm();
    else start();
  } catch (e) {
    main.replaceChildren(alertBox(e, 'The server could not be reached'));
  }
}

boot();
