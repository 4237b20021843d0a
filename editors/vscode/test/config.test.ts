import assert from 'node:assert/strict';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import {
  answerConfigurationItem,
  authHeaders,
  binaryName,
  DEFAULT_URL,
  didChangeConfigurationParams,
  initializationOptions,
  normalizeUrl,
  resolveServerCommand,
} from '../src/config';
import { checkHealth } from '../src/http';

test('server path: setting, then bundled binary, then PATH', () => {
  const bundled = '/ext/bin/souffleur-lsp';
  assert.deepEqual(resolveServerCommand('/opt/souffleur-lsp', bundled, () => true), {
    command: '/opt/souffleur-lsp',
    source: 'setting',
  });
  assert.deepEqual(resolveServerCommand('  ', bundled, (p) => p === bundled), { command: bundled, source: 'bundled' });
  assert.deepEqual(resolveServerCommand(undefined, bundled, () => false), { command: 'souffleur-lsp', source: 'path' });
  assert.equal(binaryName('win32'), 'souffleur-lsp.exe');
  assert.equal(binaryName('linux'), 'souffleur-lsp');
});

test('url: default, trailing slashes, bad values', () => {
  assert.equal(normalizeUrl(undefined), DEFAULT_URL);
  assert.equal(normalizeUrl(''), 'http://127.0.0.1:8347');
  assert.equal(normalizeUrl(' http://host:9000/ '), 'http://host:9000');
  assert.equal(normalizeUrl('https://h/prefix//'), 'https://h/prefix');
  assert.throws(() => normalizeUrl('not a url'), /not a URL/);
  assert.throws(() => normalizeUrl('ftp://h'), /http/);
});

test('what the language server is told', () => {
  assert.deepEqual(initializationOptions('http://h', undefined), { url: 'http://h', token: '' });
  const settings = { url: 'http://h', token: 't' };
  assert.deepEqual(didChangeConfigurationParams(settings), { settings: { souffleur: { url: 'http://h', token: 't' } } });
  assert.deepEqual(answerConfigurationItem('souffleur', settings), settings);
  assert.equal(answerConfigurationItem('souffleur.token', settings), 't');
  assert.equal(answerConfigurationItem('souffleur.url', settings), 'http://h');
  assert.equal(answerConfigurationItem('editor', settings), undefined);
  assert.deepEqual(authHeaders(''), {});
  assert.deepEqual(authHeaders('t'), { Authorization: 'Bearer t' });
});

test('health: up with model, non-2xx and unreachable are down', async () => {
  const server = http.createServer((req, res) => {
    if (req.url === '/v1/health') {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ status: 'ok', model: 'SmolLM2-135M' }));
    } else {
      res.writeHead(500);
      res.end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    assert.deepEqual(await checkHealth(fetch, base), { ok: true, model: 'SmolLM2-135M' });
    const bad = await checkHealth(fetch, `${base}/x`);
    assert.equal(bad.ok, false);
    assert.match(bad.message ?? '', /500/);
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
  const down = await checkHealth(fetch, base, 2000);
  assert.equal(down.ok, false);
  assert.match(down.message ?? '', /unreachable/);
});
