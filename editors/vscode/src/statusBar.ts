// The status bar item, driven by the pure state machine in status.ts.

import * as vscode from 'vscode';
import { initialStatus, reduce, StatusEvent, StatusState, StatusView, view } from './status';

export class StatusBar implements vscode.Disposable {
  private state: StatusState;
  private readonly item: vscode.StatusBarItem;
  private readonly changed = new vscode.EventEmitter<StatusView>();
  /** Fires when what the status bar shows changes. */
  readonly onDidChange = this.changed.event;

  constructor(enabled: boolean, command: string) {
    this.state = initialStatus(enabled);
    this.item = vscode.window.createStatusBarItem('souffleur.status', vscode.StatusBarAlignment.Right, 100);
    this.item.name = 'Souffleur';
    this.item.command = command;
    this.render();
    this.item.show();
  }

  get current(): StatusState {
    return this.state;
  }

  get currentView(): StatusView {
    return view(this.state);
  }

  dispatch(event: StatusEvent): void {
    const before = view(this.state);
    this.state = reduce(this.state, event);
    const after = view(this.state);
    if (before.kind !== after.kind || before.text !== after.text || before.tooltip !== after.tooltip) {
      this.render();
      this.changed.fire(after);
    }
  }

  private render(): void {
    const v = view(this.state);
    this.item.text = v.text;
    this.item.tooltip = v.tooltip;
    this.item.backgroundColor =
      v.kind === 'error' ? new vscode.ThemeColor('statusBarItem.errorBackground') : undefined;
  }

  dispose(): void {
    this.item.dispose();
    this.changed.dispose();
  }
}
