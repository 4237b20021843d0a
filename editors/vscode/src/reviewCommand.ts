// "Souffleur: Review My Changes": git diff of each workspace repository → POST /v1/review →
// diagnostics in the Problems view and a report in the "Souffleur Review" output channel.

import * as fs from 'node:fs';
import * as vscode from 'vscode';
import { repositoryRoot, workspaceDiff } from './git';
import { DiagnosticSpec, findingsToDiagnostics, formatReport, requestReview, Severity } from './review';

const SEVERITY: Record<Severity, vscode.DiagnosticSeverity> = {
  error: vscode.DiagnosticSeverity.Error,
  warning: vscode.DiagnosticSeverity.Warning,
  information: vscode.DiagnosticSeverity.Information,
  hint: vscode.DiagnosticSeverity.Hint,
};

export function toDiagnostic(spec: DiagnosticSpec): vscode.Diagnostic {
  const range = new vscode.Range(spec.line, 0, spec.line, Number.MAX_SAFE_INTEGER);
  const diagnostic = new vscode.Diagnostic(range, spec.message, SEVERITY[spec.severity]);
  diagnostic.source = 'Souffleur review';
  return diagnostic;
}

export interface ReviewContext {
  url(): string;
  token(): Promise<string | undefined>;
  diagnostics: vscode.DiagnosticCollection;
  report: vscode.OutputChannel;
}

export async function reviewMyChanges(ctx: ReviewContext): Promise<void> {
  const folders = vscode.workspace.workspaceFolders ?? [];
  if (folders.length === 0) {
    void vscode.window.showInformationMessage('Souffleur: open a folder in a git repository to review its changes.');
    return;
  }
  let roots: string[];
  try {
    const found = await Promise.all(folders.map((f) => repositoryRoot(f.uri.fsPath)));
    roots = [...new Set(found.filter((r): r is string => r !== undefined))];
  } catch (error) {
    void vscode.window.showErrorMessage(`Souffleur: ${(error as Error).message}`);
    return;
  }
  if (roots.length === 0) {
    void vscode.window.showInformationMessage('Souffleur: no workspace folder is in a git repository.');
    return;
  }

  const url = ctx.url();
  const token = await ctx.token();
  const done = await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: 'Souffleur: reviewing your changes…' },
    async (): Promise<{ findings: number; reviewed: number; summaries: string[] } | undefined> => {
      ctx.diagnostics.clear();
      ctx.report.clear();
      let findings = 0;
      let reviewed = 0;
      const summaries: string[] = [];
      for (const root of roots) {
        let diff: string;
        try {
          diff = await workspaceDiff(root);
        } catch (error) {
          void vscode.window.showErrorMessage(`Souffleur: ${(error as Error).message}`);
          return undefined;
        }
        if (diff.trim() === '') {
          ctx.report.appendLine(`${root}: no changes.`);
          continue;
        }
        const outcome = await requestReview(fetch, url, token, diff);
        switch (outcome.kind) {
          case 'unavailable':
            ctx.report.appendLine(`Review not available: ${outcome.message}`);
            void vscode.window.showWarningMessage(`Souffleur: ${outcome.message}`);
            return undefined;
          case 'unauthorized':
            ctx.report.appendLine(`Review refused: ${outcome.message}`);
            void vscode.window.showErrorMessage(`Souffleur: ${outcome.message}`, 'Set Token').then((choice) => {
              if (choice === 'Set Token') {
                void vscode.commands.executeCommand('souffleur.setToken');
              }
            });
            return undefined;
          case 'error':
            ctx.report.appendLine(`Review failed: ${outcome.message}`);
            void vscode.window.showErrorMessage(`Souffleur review: ${outcome.message}`);
            return undefined;
          case 'ok': {
            reviewed += 1;
            const byFile = findingsToDiagnostics(root, outcome.result.findings, (p) => fs.existsSync(p));
            for (const [file, specs] of byFile) {
              ctx.diagnostics.set(vscode.Uri.file(file), specs.map(toDiagnostic));
            }
            findings += outcome.result.findings.length;
            ctx.report.appendLine(formatReport(root, outcome.result));
            ctx.report.appendLine('');
            if (outcome.result.summary.trim() !== '') {
              summaries.push(outcome.result.summary.trim().split('\n')[0] ?? '');
            }
          }
        }
      }
      return { findings, reviewed, summaries };
    },
  );
  if (!done) {
    return;
  }
  if (done.reviewed === 0) {
    void vscode.window.showInformationMessage('Souffleur: no changes to review (the working tree matches HEAD).');
    return;
  }
  if (done.findings > 0) {
    void vscode.commands.executeCommand('workbench.actions.view.problems');
  }
  const summary = done.summaries.length > 0 ? ` ${done.summaries.join(' ')}` : '';
  const choice = await vscode.window.showInformationMessage(
    `Souffleur review: ${done.findings} finding(s).${summary}`,
    'Show Report',
  );
  if (choice === 'Show Report') {
    ctx.report.show(true);
  }
}
