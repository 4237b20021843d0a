// Souffleur for VS Code: starts souffleur-lsp, shows its state in the status bar, keeps the token in
// SecretStorage, reports accepted/dismissed suggestions, and reviews the workspace's changes.

import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { DidChangeConfigurationNotification, LanguageClient, State } from 'vscode-languageclient/node';
import { ACCEPTED_NOTIFICATION, CompletionRef, DISMISSED_NOTIFICATION, DismissalTracker } from './acceptance';
import { ACCEPT_COMMAND, createClient } from './client';
import {
  binaryName,
  DEFAULT_URL,
  didChangeConfigurationParams,
  normalizeUrl,
  resolveServerCommand,
  ServerSettings,
} from './config';
import { checkHealth } from './http';
import { reviewMyChanges } from './reviewCommand';
import { StatusView } from './status';
import { StatusBar } from './statusBar';

const TOKEN_KEY = 'souffleur.token';
const HEALTH_INTERVAL_MS = 30_000;

/** What `activate` returns: used by the end-to-end test. */
export interface SouffleurApi {
  status(): StatusView;
}

let souffleur: Souffleur | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<SouffleurApi> {
  souffleur = new Souffleur(context);
  await souffleur.init();
  const s = souffleur;
  return { status: () => s.status.currentView };
}

export async function deactivate(): Promise<void> {
  const s = souffleur;
  souffleur = undefined;
  await s?.shutdown();
}

class Souffleur {
  readonly output: vscode.LogOutputChannel;
  readonly status: StatusBar;
  private readonly report: vscode.OutputChannel;
  private readonly diagnostics: vscode.DiagnosticCollection;
  private readonly tracker = new DismissalTracker();
  private client: LanguageClient | undefined;
  private stoppingOnPurpose = false;
  private token: string | undefined;
  private lifecycle: Promise<void> = Promise.resolve();
  private healthTimer: ReturnType<typeof setInterval> | undefined;
  private healthSoon: ReturnType<typeof setTimeout> | undefined;
  private badUrlReported: string | undefined;
  /** The settings the running language server has (from initializationOptions or the last push). */
  private pushedSettings: string | undefined;

  constructor(private readonly context: vscode.ExtensionContext) {
    this.output = vscode.window.createOutputChannel('Souffleur', { log: true });
    this.report = vscode.window.createOutputChannel('Souffleur Review');
    this.diagnostics = vscode.languages.createDiagnosticCollection('souffleur-review');
    this.status = new StatusBar(this.enabled(), 'souffleur.showMenu');
    context.subscriptions.push(this.output, this.report, this.diagnostics, this.status);
  }

  async init(): Promise<void> {
    const c = this.context;
    c.subscriptions.push(
      vscode.commands.registerCommand('souffleur.toggle', () => this.toggle()),
      vscode.commands.registerCommand('souffleur.triggerCompletion', () => this.trigger()),
      vscode.commands.registerCommand('souffleur.setToken', () => this.setToken()),
      vscode.commands.registerCommand('souffleur.reviewChanges', () =>
        reviewMyChanges({
          url: () => this.url(),
          token: async () => this.token,
          diagnostics: this.diagnostics,
          report: this.report,
        }),
      ),
      vscode.commands.registerCommand('souffleur.clearReview', () => this.diagnostics.clear()),
      vscode.commands.registerCommand('souffleur.showLog', () => this.output.show(true)),
      vscode.commands.registerCommand('souffleur.showMenu', () => this.showMenu()),
      vscode.commands.registerCommand(ACCEPT_COMMAND, (ref: CompletionRef) => this.accepted(ref)),
      vscode.workspace.onDidChangeConfiguration((e) => this.configurationChanged(e)),
      c.secrets.onDidChange(async (e) => {
        if (e.key === TOKEN_KEY) {
          this.token = await c.secrets.get(TOKEN_KEY);
          this.pushSettings();
          this.checkHealthSoon();
        }
      }),
    );
    this.token = await c.secrets.get(TOKEN_KEY);
    if (this.enabled()) {
      this.schedule(() => this.start());
    }
  }

  // ---- settings ----

  private config(): vscode.WorkspaceConfiguration {
    return vscode.workspace.getConfiguration('souffleur');
  }

  private enabled(): boolean {
    return this.config().get<boolean>('enabled', true);
  }

  url(): string {
    const raw = this.config().get<string>('url', DEFAULT_URL);
    try {
      const url = normalizeUrl(raw);
      this.badUrlReported = undefined;
      return url;
    } catch (error) {
      if (this.badUrlReported !== raw) {
        this.badUrlReported = raw;
        void vscode.window.showErrorMessage(`Souffleur: ${(error as Error).message}; using ${DEFAULT_URL}.`);
      }
      return DEFAULT_URL;
    }
  }

  private settings(): ServerSettings {
    return { url: this.url(), token: this.token ?? '' };
  }

  private configurationChanged(e: vscode.ConfigurationChangeEvent): void {
    if (e.affectsConfiguration('souffleur.enabled')) {
      const enabled = this.enabled();
      this.status.dispatch({ type: 'enabled', value: enabled });
      this.schedule(() => (enabled ? this.start() : this.stop()));
      return;
    }
    if (e.affectsConfiguration('souffleur.serverPath')) {
      this.schedule(async () => {
        await this.stop();
        if (this.enabled()) {
          await this.start();
        }
      });
      return;
    }
    if (e.affectsConfiguration('souffleur.url')) {
      this.pushSettings();
      this.checkHealthSoon();
    }
  }

  /** `workspace/didChangeConfiguration` with `{souffleur: {url, token}}`. */
  private pushSettings(): void {
    const settings = JSON.stringify(this.settings());
    if (this.client?.state === State.Running && settings !== this.pushedSettings) {
      this.pushedSettings = settings;
      this.client
        .sendNotification(DidChangeConfigurationNotification.type, didChangeConfigurationParams(this.settings()))
        .catch((error: unknown) => this.output.warn(`could not send settings: ${String(error)}`));
    }
  }

  // ---- language client lifecycle (serialised) ----

  private schedule(op: () => Promise<void>): void {
    this.lifecycle = this.lifecycle.then(op).catch((error: unknown) => {
      this.output.error(`Souffleur: ${String(error)}`);
    });
  }

  private async start(): Promise<void> {
    if (this.client || !this.enabled()) {
      return;
    }
    const bundled = path.join(this.context.extensionPath, 'bin', binaryName());
    const { command, source } = resolveServerCommand(
      this.config().get<string>('serverPath', ''),
      bundled,
      (p) => fs.existsSync(p),
    );
    if (source === 'bundled') {
      ensureExecutable(bundled);
    }
    this.output.info(`starting ${command} (${source})`);
    this.status.dispatch({ type: 'clientStarting' });
    const client = createClient(command, this.output, this.tracker, {
      settings: () => this.settings(),
      requestStarted: () => this.status.dispatch({ type: 'requestStarted' }),
      requestFinished: (error) => {
        this.status.dispatch({ type: 'requestFinished', error });
        if (error !== undefined) {
          this.output.warn(`completion request failed: ${error}`);
          this.checkHealthSoon();
        }
      },
      dismissed: (refs) => this.notify(DISMISSED_NOTIFICATION, refs),
    });
    client.onDidChangeState((e) => {
      if (this.client !== client) {
        return;
      }
      if (e.newState === State.Running) {
        this.status.dispatch({ type: 'clientRunning' });
      } else if (e.newState === State.Starting) {
        this.status.dispatch({ type: 'clientStarting' });
      } else if (e.newState === State.Stopped && !this.stoppingOnPurpose) {
        this.status.dispatch({ type: 'clientFailed', message: 'souffleur-lsp exited (see the Souffleur output)' });
      }
    });
    this.client = client;
    this.pushedSettings = JSON.stringify(this.settings());
    try {
      await client.start();
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      const hint =
        source === 'path'
          ? ' Is souffleur-lsp on PATH? Set "souffleur.serverPath" to its location.'
          : ` Check "souffleur.serverPath" (${command}).`;
      this.output.error(`could not start ${command}: ${message}`);
      this.status.dispatch({ type: 'clientFailed', message: `${message}.${hint}` });
      this.client = undefined;
      void client.dispose(1000).catch(() => undefined);
      return;
    }
    this.status.dispatch({ type: 'clientRunning' });
    this.startHealthChecks();
  }

  private async stop(): Promise<void> {
    this.stopHealthChecks();
    const client = this.client;
    if (!client) {
      this.status.dispatch({ type: 'clientStopped' });
      return;
    }
    this.notify(DISMISSED_NOTIFICATION, this.tracker.flush());
    this.stoppingOnPurpose = true;
    try {
      await client.dispose(3000);
    } catch (error) {
      this.output.warn(`souffleur-lsp did not stop cleanly: ${String(error)}`);
    } finally {
      this.stoppingOnPurpose = false;
      this.client = undefined;
      this.status.dispatch({ type: 'clientStopped' });
    }
  }

  async shutdown(): Promise<void> {
    this.schedule(() => this.stop());
    await this.lifecycle;
  }

  // ---- health of the Souffleur HTTP server ----

  private startHealthChecks(): void {
    this.stopHealthChecks();
    void this.checkHealth();
    this.healthTimer = setInterval(() => void this.checkHealth(), HEALTH_INTERVAL_MS);
  }

  private stopHealthChecks(): void {
    if (this.healthTimer) {
      clearInterval(this.healthTimer);
      this.healthTimer = undefined;
    }
  }

  private checkHealthSoon(): void {
    if (this.healthSoon || !this.enabled()) {
      return;
    }
    this.healthSoon = setTimeout(() => {
      this.healthSoon = undefined;
      void this.checkHealth();
    }, 500);
  }

  private async checkHealth(): Promise<void> {
    if (!this.enabled()) {
      return;
    }
    const result = await checkHealth(fetch, this.url());
    const before = this.status.current.server;
    this.status.dispatch({ type: 'health', ok: result.ok, message: result.message, model: result.model });
    if (!result.ok && before !== 'down') {
      this.output.warn(`Souffleur server down: ${result.message ?? ''}`);
    } else if (result.ok && before === 'down') {
      this.output.info('Souffleur server is back');
    }
  }

  // ---- telemetry ----

  private accepted(ref: CompletionRef): void {
    if (!ref || typeof ref.completion_id !== 'string') {
      return;
    }
    this.tracker.accepted(ref);
    this.notify(ACCEPTED_NOTIFICATION, [ref]);
  }

  private notify(method: string, refs: CompletionRef[]): void {
    const client = this.client;
    if (!client || client.state !== State.Running) {
      return;
    }
    for (const ref of refs) {
      client
        .sendNotification(method, { completion_id: ref.completion_id, choice_index: ref.choice_index })
        .catch((error: unknown) => this.output.warn(`could not send ${method}: ${String(error)}`));
    }
  }

  // ---- commands ----

  private async toggle(): Promise<void> {
    const inspect = this.config().inspect<boolean>('enabled');
    const target =
      inspect?.workspaceFolderValue !== undefined || inspect?.workspaceValue !== undefined
        ? vscode.ConfigurationTarget.Workspace
        : vscode.ConfigurationTarget.Global;
    const next = !this.enabled();
    await this.config().update('enabled', next, target);
    void vscode.window.setStatusBarMessage(`Souffleur ${next ? 'enabled' : 'disabled'}`, 2000);
  }

  private async trigger(): Promise<void> {
    if (!this.enabled()) {
      const choice = await vscode.window.showInformationMessage('Souffleur is disabled.', 'Enable');
      if (choice === 'Enable') {
        await this.toggle();
      }
      return;
    }
    await vscode.commands.executeCommand('editor.action.inlineSuggest.trigger');
  }

  private async setToken(): Promise<void> {
    const value = await vscode.window.showInputBox({
      title: 'Souffleur: Set Token',
      prompt: 'The token from `souffleur token create` (leave empty to remove the stored token)',
      password: true,
      ignoreFocusOut: true,
    });
    if (value === undefined) {
      return;
    }
    const token = value.trim();
    if (token === '') {
      await this.context.secrets.delete(TOKEN_KEY);
      void vscode.window.showInformationMessage('Souffleur: token removed.');
    } else {
      await this.context.secrets.store(TOKEN_KEY, token);
      void vscode.window.showInformationMessage('Souffleur: token stored.');
    }
    // onDidChange of the secret storage pushes it; do it here too in case the event is late.
    this.token = token === '' ? undefined : token;
    this.pushSettings();
  }

  private async showMenu(): Promise<void> {
    const v = this.status.currentView;
    const items: Array<vscode.QuickPickItem & { command: string }> = [
      { label: this.enabled() ? '$(circle-slash) Disable' : '$(check) Enable', command: 'souffleur.toggle' },
      { label: '$(lightbulb) Trigger Completion Now', command: 'souffleur.triggerCompletion' },
      { label: '$(key) Set Token', command: 'souffleur.setToken' },
      { label: '$(checklist) Review My Changes', command: 'souffleur.reviewChanges' },
      { label: '$(output) Show Log', command: 'souffleur.showLog' },
    ];
    const pick = await vscode.window.showQuickPick(items, { title: v.tooltip });
    if (pick) {
      await vscode.commands.executeCommand(pick.command);
    }
  }
}

/** A binary unpacked from a .vsix may have lost its executable bit. */
function ensureExecutable(file: string): void {
  if (process.platform === 'win32') {
    return;
  }
  try {
    const mode = fs.statSync(file).mode;
    if ((mode & 0o111) === 0) {
      fs.chmodSync(file, mode | 0o755);
    }
  } catch {
    // start() reports a binary that cannot be run.
  }
}
