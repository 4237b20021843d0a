import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { repositoryRoot, workspaceDiff } from '../src/git';

function git(cwd: string, ...args: string[]): void {
  execFileSync('git', ['-c', 'user.name=t', '-c', 'user.email=t@example.invalid', '-c', 'commit.gpgsign=false', ...args], {
    cwd,
    stdio: 'ignore',
  });
}

function tempRepo(): string {
  const dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'souffleur-git-')));
  git(dir, 'init', '-q');
  return dir;
}

test('diff against HEAD: staged, unstaged and untracked; ignored files left out', async () => {
  const dir = tempRepo();
  try {
    fs.writeFileSync(path.join(dir, 'a.txt'), 'one\ntwo\n');
    fs.writeFileSync(path.join(dir, 'b.txt'), 'bee\n');
    fs.writeFileSync(path.join(dir, '.gitignore'), 'ignored.txt\n');
    git(dir, 'add', '.');
    git(dir, 'commit', '-q', '-m', 'init');
    assert.equal(await workspaceDiff(dir), '');

    fs.writeFileSync(path.join(dir, 'a.txt'), 'one\nTWO\n'); // unstaged
    fs.writeFileSync(path.join(dir, 'b.txt'), 'bee\nsting\n');
    git(dir, 'add', 'b.txt'); // staged
    fs.mkdirSync(path.join(dir, 'sub'));
    fs.writeFileSync(path.join(dir, 'sub', 'new.rs'), 'fn main() {}\n'); // untracked
    fs.writeFileSync(path.join(dir, 'ignored.txt'), 'secret\n');

    const diff = await workspaceDiff(dir);
    assert.match(diff, /^diff --git a\/a\.txt b\/a\.txt$/m);
    assert.match(diff, /^\+TWO$/m);
    assert.match(diff, /^\+sting$/m);
    assert.match(diff, /^\+\+\+ b\/sub\/new\.rs$/m);
    assert.match(diff, /^\+fn main\(\) \{\}$/m);
    assert.doesNotMatch(diff, /secret/);

    assert.equal(await repositoryRoot(path.join(dir, 'sub')), dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a repository without commits: staged files count as new', async () => {
  const dir = tempRepo();
  try {
    fs.writeFileSync(path.join(dir, 'x.py'), 'print(1)\n');
    git(dir, 'add', 'x.py');
    const diff = await workspaceDiff(dir);
    assert.match(diff, /^\+print\(1\)$/m);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('outside a repository there is no root', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'souffleur-nogit-'));
  try {
    assert.equal(await repositoryRoot(dir), undefined);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
