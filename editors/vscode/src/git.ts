// The workspace's changes as one unified diff, from the `git` command line. No `vscode` import.

import { execFile } from 'node:child_process';

const MAX_BUFFER = 64 * 1024 * 1024;

interface GitRun {
  code: number;
  stdout: string;
  stderr: string;
}

function git(cwd: string, args: string[]): Promise<GitRun> {
  return new Promise((resolve, reject) => {
    execFile(
      'git',
      args,
      { cwd, maxBuffer: MAX_BUFFER, encoding: 'utf8', env: { ...process.env, GIT_TERMINAL_PROMPT: '0', LC_ALL: 'C' } },
      (error, stdout, stderr) => {
        if (error && typeof (error as NodeJS.ErrnoException).code === 'string') {
          // The git binary itself could not be run (ENOENT…).
          reject(new Error(`git could not be run: ${error.message}`));
          return;
        }
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** The top directory of the repository holding `dir`, or undefined if it is not in one. */
export async function repositoryRoot(dir: string): Promise<string | undefined> {
  const run = await git(dir, ['rev-parse', '--show-toplevel']);
  return run.code === 0 ? run.stdout.trim() : undefined;
}

const DIFF_FLAGS = ['--no-color', '--no-ext-diff', '--no-textconv'];

/**
 * Everything that differs from HEAD in the repository at `root`: staged and unstaged changes to
 * tracked files, plus untracked files that .gitignore does not exclude, as new files. Paths are
 * relative to `root` with git's `a/` and `b/` prefixes. In a repository without commits every
 * staged file counts as new.
 */
export async function workspaceDiff(root: string): Promise<string> {
  const parts: string[] = [];
  const head = await git(root, ['rev-parse', '--verify', '--quiet', 'HEAD']);
  if (head.code === 0) {
    const tracked = await git(root, ['diff', ...DIFF_FLAGS, 'HEAD', '--']);
    if (tracked.code !== 0) {
      throw new Error(`git diff failed: ${tracked.stderr.trim()}`);
    }
    parts.push(tracked.stdout);
  } else {
    const staged = await git(root, ['diff', ...DIFF_FLAGS, '--cached', '--']);
    const unstaged = await git(root, ['diff', ...DIFF_FLAGS, '--']);
    if (staged.code !== 0 || unstaged.code !== 0) {
      throw new Error(`git diff failed: ${(staged.stderr + unstaged.stderr).trim()}`);
    }
    parts.push(staged.stdout, unstaged.stdout);
  }
  const others = await git(root, ['ls-files', '--others', '--exclude-standard', '-z']);
  if (others.code !== 0) {
    throw new Error(`git ls-files failed: ${others.stderr.trim()}`);
  }
  for (const file of others.stdout.split('\0').filter((f) => f !== '')) {
    // Exit code 1 means "there are differences", which is always the case here.
    const added = await git(root, ['diff', ...DIFF_FLAGS, '--no-index', '--', '/dev/null', file]);
    if (added.code > 1) {
      throw new Error(`git diff --no-index ${file} failed: ${added.stderr.trim()}`);
    }
    parts.push(added.stdout);
  }
  return parts.filter((p) => p !== '').join('');
}
