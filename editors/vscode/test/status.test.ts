import assert from 'node:assert/strict';
import { test } from 'node:test';
import { initialStatus, reduce, StatusEvent, StatusState, view } from '../src/status';

function run(state: StatusState, ...events: StatusEvent[]): StatusState {
  return events.reduce(reduce, state);
}

const running = run(initialStatus(true), { type: 'clientStarting' }, { type: 'clientRunning' });

test('starts in "starting" when enabled and "disabled" when not', () => {
  assert.equal(view(initialStatus(true)).kind, 'starting');
  assert.equal(view(initialStatus(false)).kind, 'disabled');
});

test('running client is ready; the model from health appears in the tooltip', () => {
  assert.equal(view(running).kind, 'ready');
  const s = reduce(running, { type: 'health', ok: true, model: 'SmolLM2' });
  assert.equal(view(s).kind, 'ready');
  assert.match(view(s).tooltip, /SmolLM2/);
});

test('working while requests are in flight, ready when all finished', () => {
  let s = run(running, { type: 'requestStarted' }, { type: 'requestStarted' });
  assert.equal(view(s).kind, 'working');
  assert.match(view(s).text, /spin/);
  s = reduce(s, { type: 'requestFinished' });
  assert.equal(view(s).kind, 'working');
  s = reduce(s, { type: 'requestFinished' });
  assert.equal(view(s).kind, 'ready');
  // more finishes than starts never go negative
  s = reduce(s, { type: 'requestFinished' });
  assert.equal(s.inFlight, 0);
  assert.equal(view(reduce(s, { type: 'requestStarted' })).kind, 'working');
});

test('server down is an error until a health check succeeds', () => {
  let s = reduce(running, { type: 'health', ok: false, message: 'ECONNREFUSED' });
  assert.equal(view(s).kind, 'error');
  assert.match(view(s).tooltip, /ECONNREFUSED/);
  // error wins over working
  s = reduce(s, { type: 'requestStarted' });
  assert.equal(view(s).kind, 'error');
  s = run(s, { type: 'requestFinished' }, { type: 'health', ok: true });
  assert.equal(view(s).kind, 'ready');
  assert.equal(s.problem, undefined);
});

test('a failed request shows an error until the next request succeeds', () => {
  let s = run(running, { type: 'requestStarted' }, { type: 'requestFinished', error: 'boom' });
  assert.equal(view(s).kind, 'error');
  assert.match(view(s).tooltip, /boom/);
  s = run(s, { type: 'requestStarted' }, { type: 'requestFinished' });
  assert.equal(view(s).kind, 'ready');
});

test('client failure is an error that a healthy server does not hide', () => {
  let s = run(initialStatus(true), { type: 'clientStarting' }, { type: 'clientFailed', message: 'spawn souffleur-lsp ENOENT' });
  assert.equal(view(s).kind, 'error');
  s = reduce(s, { type: 'health', ok: true });
  assert.equal(view(s).kind, 'error');
  assert.match(view(s).tooltip, /ENOENT/);
  s = run(s, { type: 'clientStarting' }, { type: 'clientRunning' });
  assert.equal(view(s).kind, 'ready');
});

test('disabled wins over everything and clears in-flight work', () => {
  let s = run(running, { type: 'requestStarted' }, { type: 'health', ok: false });
  s = reduce(s, { type: 'enabled', value: false });
  assert.equal(view(s).kind, 'disabled');
  assert.equal(s.inFlight, 0);
  s = run(s, { type: 'clientStopped' }, { type: 'enabled', value: true });
  // re-enabled: the stale "down" is still known until the next health check
  assert.equal(view(s).kind, 'error');
  s = run(s, { type: 'health', ok: true }, { type: 'clientStarting' });
  assert.equal(view(s).kind, 'starting');
  s = reduce(s, { type: 'clientRunning' });
  assert.equal(view(s).kind, 'ready');
});
