// package.json and the code agree: every contributed command is registered, every setting read
// exists, and the manifest has what VS Code needs to load the bundle.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';

const dir = path.resolve(__dirname, '..', '..', '..');
const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as {
  name: string;
  main: string;
  engines: { vscode: string };
  activationEvents: string[];
  contributes: { commands: Array<{ command: string }>; configuration: { properties: Record<string, { default?: unknown }> } };
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
};
const source = fs.readFileSync(path.join(dir, 'src', 'extension.ts'), 'utf8');

test('manifest basics', () => {
  assert.equal(manifest.name, 'souffleur');
  assert.equal(manifest.main, './out/extension.js');
  assert.deepEqual(manifest.activationEvents, ['onStartupFinished']);
  assert.match(manifest.engines.vscode, /^\^1\.9\d\./);
  // @types/vscode must not be newer than the engine (vsce refuses to package otherwise)
  const engine = manifest.engines.vscode.replace('^', '');
  assert.equal(manifest.devDependencies['@types/vscode'], engine);
  assert.match(manifest.dependencies['vscode-languageclient'], /^\^?11\./);
});

test('every contributed command is registered', () => {
  const commands = manifest.contributes.commands.map((c) => c.command);
  for (const c of ['souffleur.toggle', 'souffleur.triggerCompletion', 'souffleur.setToken', 'souffleur.reviewChanges']) {
    assert.ok(commands.includes(c), `${c} contributed`);
  }
  for (const c of commands) {
    assert.ok(source.includes(`registerCommand('${c}'`), `${c} registered in extension.ts`);
  }
});

test('settings and their defaults', () => {
  const p = manifest.contributes.configuration.properties;
  assert.equal(p['souffleur.url'].default, 'http://127.0.0.1:8347');
  assert.equal(p['souffleur.enabled'].default, true);
  assert.equal(p['souffleur.serverPath'].default, '');
  assert.equal(p['souffleur.token'], undefined, 'the token lives in SecretStorage, not in settings');
});
