import assert from 'node:assert/strict';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import {
  findingsToDiagnostics,
  formatReport,
  normalizeSeverity,
  parseReviewResponse,
  requestReview,
  resolveFindingPath,
} from '../src/review';

const root = path.resolve('/repo');

test('severity words map to diagnostic severities', () => {
  assert.equal(normalizeSeverity('error'), 'error');
  assert.equal(normalizeSeverity('CRITICAL'), 'error');
  assert.equal(normalizeSeverity('warning'), 'warning');
  assert.equal(normalizeSeverity('info'), 'information');
  assert.equal(normalizeSeverity('note'), 'hint');
  assert.equal(normalizeSeverity('whatever'), 'warning');
  assert.equal(normalizeSeverity(undefined), 'warning');
});

test('parseReviewResponse validates and normalises', () => {
  const r = parseReviewResponse({
    findings: [
      { path: 'src/a.rs', line: 3, severity: 'error', message: 'unwrap on user input' },
      { path: 'b.py', severity: 'info', message: 'no line' },
      { path: 'c.ts', line: 2.7, message: 'fractional line' },
    ],
    summary: 'Two problems.',
  });
  assert.equal(r.summary, 'Two problems.');
  assert.deepEqual(r.findings[0], { path: 'src/a.rs', line: 3, severity: 'error', message: 'unwrap on user input' });
  assert.equal(r.findings[1].line, 0);
  assert.equal(r.findings[2].line, 2);
  assert.equal(r.findings[2].severity, 'warning');
  assert.deepEqual(parseReviewResponse({ summary: 'LGTM' }), { findings: [], summary: 'LGTM' });
  assert.throws(() => parseReviewResponse([]), /not a JSON object/);
  assert.throws(() => parseReviewResponse({ findings: {} }), /not an array/);
  assert.throws(() => parseReviewResponse({ findings: [{ line: 1, message: 'x' }] }), /findings\[0\]\.path/);
  assert.throws(() => parseReviewResponse({ findings: [{ path: 'a', line: 1 }] }), /findings\[0\]\.message/);
});

test('findings become 0-based diagnostics grouped by file, sorted by line', () => {
  const exists = (p: string) => [path.join(root, 'src/a.rs'), path.join(root, 'b.py')].includes(p);
  const byFile = findingsToDiagnostics(
    root,
    [
      { path: 'src/a.rs', line: 10, severity: 'warning', message: 'second' },
      { path: 'src/a.rs', line: 1, severity: 'error', message: 'first' },
      { path: 'b/b.py', line: 0, severity: 'hint', message: 'diff prefix, whole file' },
      { path: '../outside.rs', line: 1, severity: 'error', message: 'dropped' },
    ],
    exists,
  );
  assert.deepEqual([...byFile.keys()].sort(), [path.join(root, 'b.py'), path.join(root, 'src/a.rs')].sort());
  assert.deepEqual(byFile.get(path.join(root, 'src/a.rs')), [
    { line: 0, severity: 'error', message: 'first' },
    { line: 9, severity: 'warning', message: 'second' },
  ]);
  assert.deepEqual(byFile.get(path.join(root, 'b.py')), [{ line: 0, severity: 'hint', message: 'diff prefix, whole file' }]);
});

test('a real directory named b/ keeps its prefix', () => {
  const exists = (p: string) => p === path.join(root, 'b/x.rs');
  assert.equal(resolveFindingPath(root, 'b/x.rs', exists), path.join(root, 'b/x.rs'));
  assert.equal(resolveFindingPath(root, 'a/../../etc/passwd', () => false), undefined);
});

test('formatReport lists path:line: severity: message and the summary', () => {
  const text = formatReport('/repo', {
    findings: [{ path: 'src/a.rs', line: 3, severity: 'error', message: 'bad' }],
    summary: 'One problem.\nFix it.',
  });
  assert.match(text, /1 finding/);
  assert.match(text, /src\/a\.rs:3: error: bad/);
  assert.match(text, /Summary:\n {2}One problem\.\n {2}Fix it\./);
});

// A loopback server standing in for Souffleur's review API.
let server: http.Server;
let base = '';
const seen: Array<{ auth?: string; body: unknown }> = [];

before(async () => {
  server = http.createServer((req, res) => {
    let data = '';
    req.on('data', (c: Buffer) => (data += c.toString()));
    req.on('end', () => {
      const url = req.url ?? '';
      if (url.startsWith('/missing/')) {
        res.writeHead(404, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ error: { message: 'unknown endpoint', type: 'not_found', code: 404 } }));
        return;
      }
      if (url.startsWith('/auth/')) {
        res.writeHead(401, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ error: { message: 'invalid token', type: 'auth', code: 401 } }));
        return;
      }
      if (url.startsWith('/broken/')) {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end('{"findings": 3}');
        return;
      }
      seen.push({ auth: req.headers.authorization, body: JSON.parse(data) });
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ findings: [{ path: 'a.rs', line: 2, severity: 'error', message: 'x' }], summary: 'ok' }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(() => {
  server.close();
});

test('requestReview posts the diff with the token and parses findings', async () => {
  const outcome = await requestReview(fetch, base, 'sk-test', 'diff --git a/a.rs b/a.rs\n');
  assert.equal(outcome.kind, 'ok');
  assert.equal(outcome.kind === 'ok' && outcome.result.findings[0].path, 'a.rs');
  assert.deepEqual(seen.at(-1), { auth: 'Bearer sk-test', body: { diff: 'diff --git a/a.rs b/a.rs\n' } });
  await requestReview(fetch, base, undefined, 'x');
  assert.equal(seen.at(-1)?.auth, undefined);
});

test('404 means the review API is not available yet', async () => {
  const outcome = await requestReview(fetch, `${base}/missing`, undefined, 'x');
  assert.equal(outcome.kind, 'unavailable');
  assert.match(outcome.kind === 'unavailable' ? outcome.message : '', /no review API/);
});

test('401 asks for a token; a malformed answer and a dead server are errors', async () => {
  const unauthorized = await requestReview(fetch, `${base}/auth`, 'bad', 'x');
  assert.equal(unauthorized.kind, 'unauthorized');
  assert.match(unauthorized.kind === 'unauthorized' ? unauthorized.message : '', /invalid token/);
  const broken = await requestReview(fetch, `${base}/broken`, undefined, 'x');
  assert.equal(broken.kind, 'error');
  // a port nobody listens on: bind one, close it, use it
  const probe = http.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const dead = await requestReview(fetch, `http://127.0.0.1:${port}`, undefined, 'x', 2000);
  assert.equal(dead.kind, 'error');
  assert.match(dead.kind === 'error' ? dead.message : '', /could not reach/);
});
