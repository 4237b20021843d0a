// End-to-end test of Souffleur's web console in headless Chromium (playwright-core), against a real
// `souffleur serve` with tokens, on 127.0.0.1. run.sh installs what this needs.
//
//   node drive.mjs
//
// Walks what an admin does: a wrong token is refused; sign in; the overview; completions and editor
// events sent with a developer's token show up in the usage page's plot and tables; create a token
// in the form, use it with curl, revoke it and see curl get 401; add a repository and watch it
// sync, sync it again, remove it; filter the audit log by user and
// export it (CSV and JSON Lines); a form without its CSRF token and a stale session are refused;
// sign out. Screenshots go to out/ (out/usage.png is the one in the README).

import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '..', '..');
const env = process.env;
const cfg = {
  souffleur: env.SOUFFLEUR_BIN ?? path.join(repoRoot, 'target', 'debug', 'souffleur'),
  models: env.SOUFFLEUR_MODELS ?? path.join(os.homedir(), '.souffleur', 'models'),
  chromium: env.CHROMIUM ?? '/usr/bin/chromium',
  out: path.join(here, 'out'),
};

let passed = 0;
function ok(name) {
  passed += 1;
  console.log(`ok - ${name}`);
}
function check(cond, what) {
  if (!cond) {
    throw new Error(`not ok - ${what}`);
  }
}

const home = fs.mkdtempSync(path.join(os.tmpdir(), 'souffleur-console-'));
// Two git repositories under the directory the console may add from: one indexed before the
// server starts (so it has an index), one added in the console.
const gitRoot = path.join(home, 'git');
function makeRepo(name, files) {
  const dir = path.join(gitRoot, name);
  fs.mkdirSync(dir, { recursive: true });
  for (const [file, text] of Object.entries(files)) {
    fs.writeFileSync(path.join(dir, file), text);
  }
  const git = (...args) => execFileSync('git', ['-C', dir, ...args], { stdio: 'ignore' });
  git('init', '-q');
  git('add', '.');
  git('-c', 'user.name=t', '-c', 'user.email=t@example.com', 'commit', '-q', '-m', 'init');
  return dir;
}
makeRepo('billing', { 'invoice.py': 'def total(lines):\n    return sum(l.amount for l in lines)\n' });
const ledger = makeRepo('ledger', {
  'ledger.py': 'class Ledger:\n    def balance(self):\n        return sum(self.entries)\n',
  'util.py': 'def clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n',
});
fs.writeFileSync(
  path.join(home, 'config.toml'),
  `[model]\npath = "${path.join(cfg.models, 'SmolLM2-135M-Instruct.Q4_1.gguf')}"\n\n[audit]\nretention_days = 90\n\n[console]\nrepo_roots = ["${gitRoot}"]\n`,
);
const cli = (...args) =>
  execFileSync(cfg.souffleur, args, { env: { ...env, SOUFFLEUR_HOME: home }, encoding: 'utf8' });
cli('index', 'add', path.join(gitRoot, 'billing'));
const lastLine = (text) => text.trim().split('\n').pop().trim();
const adminToken = lastLine(cli('token', 'create', '--name', 'ada', '--role', 'admin'));
const devToken = lastLine(cli('token', 'create', '--name', 'dev-linus'));

const server = spawn(cfg.souffleur, ['serve', '--port', '0'], {
  env: { ...env, SOUFFLEUR_HOME: home },
  stdio: ['pipe', 'pipe', 'inherit'],
});
const base = await new Promise((resolve, reject) => {
  const lines = readline.createInterface({ input: server.stdout });
  lines.once('line', (line) => {
    const url = line.split(/\s+/).find((w) => w.startsWith('http://127.0.0.1:'));
    url ? resolve(url.replace(/\/$/, '')) : reject(new Error(`no URL in: ${line}`));
  });
  server.once('exit', (code) => reject(new Error(`souffleur exited with ${code}`)));
});

/** curl, as an admin's shell would use a token: gives the HTTP status. */
function curlStatus(token, urlPath) {
  return execFileSync('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '-H', `Authorization: Bearer ${token}`, `${base}${urlPath}`], {
    encoding: 'utf8',
  }).trim();
}

async function api(token, urlPath, body) {
  const r = await fetch(`${base}${urlPath}`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  check(r.ok, `${urlPath} answered ${r.status}`);
  return r.status === 200 && r.headers.get('content-type')?.includes('json') ? r.json() : null;
}

fs.mkdirSync(cfg.out, { recursive: true });
const browser = await chromium.launch({ executablePath: cfg.chromium, headless: true, args: ['--no-sandbox', '--disable-gpu'] });
const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
const page = await context.newPage();
const shot = (name) => page.screenshot({ path: path.join(cfg.out, `${name}.png`), fullPage: true });

try {
  // Sign-in: a wrong token is refused, the admin's opens the overview.
  await page.goto(`${base}/admin`);
  check(page.url().endsWith('/admin/login'), `not sent to the sign-in page: ${page.url()}`);
  await page.fill('#token', 'sfl_wrong');
  await page.click('#sign-in');
  check((await page.textContent('.error')).includes('not valid'), 'a wrong token is refused');
  await shot('sign-in-refused');
  ok('a wrong token is refused');
  await page.fill('#token', adminToken);
  await page.click('#sign-in');
  await page.waitForSelector('h1:text("Overview")');
  check((await page.textContent('main')).includes('SmolLM2'), 'the overview lists the model');
  await shot('overview');
  ok('sign in with an admin token; the overview lists the model');

  // Usage: completions and editor events with a developer's token appear in the plot and tables.
  let first = null;
  for (const [i, language] of ['python', 'python', 'rust'].entries()) {
    const answer = await api(devToken, '/v1/completions', {
      language,
      segments: { prefix: `def add_${i}(a, b):\n    return `, suffix: '\n', filepath: `m${i}.py` },
    });
    first ??= answer.id;
    await api(devToken, '/v1/events', { type: 'view', completion_id: answer.id });
  }
  await api(devToken, '/v1/events', { type: 'select', completion_id: first });
  await page.click('nav a[href="/admin/usage"]');
  await page.waitForSelector('#plot-completions[data-drawn="true"] canvas');
  check((await page.textContent('#total-completions')).trim() === '3', 'three completions counted');
  check((await page.textContent('#total-accepted')).trim() === '1', 'one accepted');
  const languages = await page.textContent('#by-language');
  check(languages.includes('python') && languages.includes('rust'), 'acceptance by language');
  check((await page.textContent('#by-user')).includes('dev-linus'), 'acceptance by user');
  await shot('usage');
  ok('usage plot and tables show the completions and the acceptance');

  // Tokens: create one in the form, use it with curl, revoke it, curl gets 401.
  await page.click('nav a[href="/admin/tokens"]');
  await page.fill('#name', 'ci-pipeline');
  await page.selectOption('#role', 'user');
  await page.fill('#repos', '*');
  await page.fill('#expires_days', '30');
  await page.click('#create-token');
  const secret = await page.inputValue('#new-secret');
  check(secret.startsWith('sfl_'), `a secret is shown: ${secret}`);
  await shot('token-created');
  check(curlStatus(secret, '/v1/models') === '200', 'the new token works with curl');
  ok('create a token in the console and use it with curl');
  await page.reload();
  check(!(await page.content()).includes(secret), 'the secret is shown only once');
  await page.click('tr[data-name="ci-pipeline"] button:text("Revoke")');
  await page.waitForSelector('.notice');
  check((await page.textContent('tr[data-name="ci-pipeline"] .state')).trim() === 'revoked', 'listed as revoked');
  check(curlStatus(secret, '/v1/models') === '401', 'the revoked token gets 401');
  ok('revoke it; curl gets 401');

  // Repositories: a path outside the allowed directory is refused; one inside is added and
  // synced while the page follows it; it can be removed.
  await page.click('nav a[href="/admin/repos"]');
  check((await page.textContent('#repos')).includes('billing'), 'the indexed repository is listed');
  await page.fill('#repo-path', '/etc');
  await page.click('#add-repo');
  check((await page.textContent('.error')).includes('outside the directories'), 'a path outside the roots is refused');
  await page.fill('#repo-path', ledger);
  await page.click('#add-repo');
  await page.waitForSelector('tr[data-name="ledger"] .phase:text("done")', { timeout: 60000 });
  check((await page.textContent('tr[data-name="ledger"] .state')).trim() === 'synced', 'the added repository is synced');
  await shot('repositories');
  ok('add a repository in the console and watch it sync');
  await page.click('tr[data-name="ledger"] button:text("Sync now")');
  await page.waitForSelector('tr[data-name="ledger"] .job:has-text("already up to date")', { timeout: 60000 });
  await page.click('tr[data-name="ledger"] button:text("Remove")');
  await page.waitForSelector('.notice:has-text("ledger was removed")');
  check(!(await page.textContent('#repos')).includes('ledger'), 'the removed repository is gone');
  ok('sync it again (up to date) and remove it');
  await page.fill('#repo-path', `file://${ledger}`);
  await page.fill('#repo-name', 'ledger-mirror');
  await page.click('#add-repo');
  await page.waitForSelector('tr[data-name="ledger-mirror"] .phase:text("done")', { timeout: 60000 });
  check((await page.textContent('tr[data-name="ledger-mirror"]')).includes('clones/ledger-mirror.git'), 'cloned as a mirror');
  check((await page.textContent('tr[data-name="ledger-mirror"] .state')).trim() === 'synced', 'the clone is synced');
  ok('add a repository by its git URL: cloned, then synced');
  fs.writeFileSync(path.join(ledger, 'audit.py'), 'def audited(entry):\n    return entry.checked\n');
  execFileSync('git', ['-C', ledger, 'add', '.'], { stdio: 'ignore' });
  execFileSync('git', ['-C', ledger, '-c', 'user.name=t', '-c', 'user.email=t@example.com', 'commit', '-q', '-m', 'audit'], { stdio: 'ignore' });
  await page.click('tr[data-name="ledger-mirror"] button:text("Sync now")');
  await page.waitForSelector('tr[data-name="ledger-mirror"] .job:has-text("1 files processed")', { timeout: 60000 });
  ok('sync now fetches the new commit from the remote first');

  // Audit log: filter by user, export.
  await page.click('nav a[href="/admin/audit"]');
  await page.selectOption('#filter-user', 'ada');
  await page.click('#apply-filter');
  const audit = await page.textContent('#audit');
  check(audit.includes('revoke token ci-pipeline') && audit.includes('create token ci-pipeline'), 'the actions are in the log');
  check(audit.includes('add repository ledger') && audit.includes('remove repository ledger'), 'repository actions are in the log');
  check(!audit.includes('dev-linus'), 'filtered to one user');
  await shot('audit');
  const [csv] = await Promise.all([page.waitForEvent('download'), page.click('#export-csv')]);
  const csvText = fs.readFileSync(await csv.path(), 'utf8');
  check(csvText.startsWith('id,time_utc,token,') && csvText.includes('revoke token ci-pipeline'), 'CSV export');
  const [jsonl] = await Promise.all([page.waitForEvent('download'), page.click('#export-jsonl')]);
  const rows = fs.readFileSync(await jsonl.path(), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  check(rows.length > 0 && rows.every((r) => r.token === 'ada'), 'JSON Lines export, filtered');
  ok('filter the audit log and export it as CSV and JSON Lines');

  // A form without its CSRF token is refused and changes nothing.
  await page.goto(`${base}/admin/tokens`);
  await page.evaluate(() => document.querySelectorAll('input[name="csrf"]').forEach((e) => e.remove()));
  await page.fill('#name', 'forged');
  await page.click('#create-token');
  check((await page.textContent('body')).includes('CSRF token is missing'), 'a form without CSRF is refused');
  await page.goto(`${base}/admin/tokens`);
  check(!(await page.content()).includes('data-name="forged"'), 'nothing was created');
  ok('a form without its CSRF token is refused');

  // Sign out; the old session cookie opens nothing; a made-up one neither.
  const cookies = await context.cookies();
  await page.click('#sign-out');
  await page.waitForSelector('#sign-in');
  await context.addCookies(cookies);
  await page.goto(`${base}/admin`);
  check(page.url().endsWith('/admin/login'), 'the signed-out session is over');
  await context.addCookies([{ name: 'souffleur_session', value: 'f'.repeat(64), url: `${base}/admin` }]);
  await page.goto(`${base}/admin/audit`);
  check(page.url().endsWith('/admin/login'), 'an unknown session is refused');
  await shot('signed-out');
  ok('sign out; stale and unknown sessions are sent to sign in');
} finally {
  await browser.close();
  server.kill();
  fs.rmSync(home, { recursive: true, force: true });
}
console.log(`# console: ${passed} passed; screenshots in ${cfg.out}`);
