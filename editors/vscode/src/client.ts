// The language client for souffleur-lsp, with the middleware that feeds the status bar and the
// acceptance telemetry.

import * as vscode from 'vscode';
import {
  CloseAction,
  ErrorAction,
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  TransportKind,
} from 'vscode-languageclient/node';
import { Anchor, CompletionRef, completionRefFromArguments, DismissalTracker, textAfterCursor } from './acceptance';
import { answerConfigurationItem, initializationOptions, ServerSettings } from './config';

/** The command VS Code runs when the user accepts a Souffleur inline suggestion (not in the palette). */
export const ACCEPT_COMMAND = 'souffleur.internal.accepted';

export interface ClientHooks {
  settings(): ServerSettings;
  requestStarted(): void;
  requestFinished(error?: string): void;
  /** Suggestions the user passed by (sent as `souffleur/dismissed`). */
  dismissed(refs: CompletionRef[]): void;
}

export function createClient(
  command: string,
  output: vscode.LogOutputChannel,
  tracker: DismissalTracker,
  hooks: ClientHooks,
): LanguageClient {
  const serverOptions: ServerOptions = {
    run: { command, transport: TransportKind.stdio },
    debug: { command, transport: TransportKind.stdio, options: { env: { ...process.env, RUST_LOG: 'debug' } } },
  };
  const settings = hooks.settings();
  let crashes = 0;
  const clientOptions: LanguageClientOptions = {
    documentSelector: [{ scheme: 'file' }, { scheme: 'untitled' }],
    initializationOptions: initializationOptions(settings.url, settings.token),
    outputChannel: output,
    initializationFailedHandler: (error) => {
      output.error(`souffleur-lsp failed to initialize: ${String(error)}`);
      return false;
    },
    errorHandler: {
      error: () => ({ action: ErrorAction.Continue, handled: true }),
      closed: () => {
        crashes += 1;
        if (crashes > 4) {
          return { action: CloseAction.DoNotRestart, message: 'souffleur-lsp stopped 5 times; it will not be restarted. See the Souffleur output.' };
        }
        return { action: CloseAction.Restart, handled: true };
      },
    },
    middleware: {
      provideInlineCompletionItems: async (document, position, context, token, next) => {
        const anchor = anchorOf(document, position);
        const passed = tracker.request(anchor);
        if (passed.length > 0) {
          hooks.dismissed(passed);
        }
        hooks.requestStarted();
        let failure: string | undefined;
        try {
          const result = await next(document, position, context, token);
          if (result) {
            const items = Array.isArray(result) ? result : result.items;
            tracker.offered(anchor, rewriteItems(items, document, position));
          }
          return result;
        } catch (error) {
          failure = error instanceof Error ? error.message : String(error);
          throw error;
        } finally {
          hooks.requestFinished(token.isCancellationRequested ? undefined : failure);
        }
      },
      provideCompletionItem: async (document, position, context, token, next) => {
        hooks.requestStarted();
        let failure: string | undefined;
        try {
          return await next(document, position, context, token);
        } catch (error) {
          failure = error instanceof Error ? error.message : String(error);
          throw error;
        } finally {
          hooks.requestFinished(token.isCancellationRequested ? undefined : failure);
        }
      },
      workspace: {
        // The token lives in SecretStorage: answer `souffleur` sections here, with it.
        configuration: async (params, token, next) => {
          const fromEditor = await next(params, token);
          if (!Array.isArray(fromEditor)) {
            return fromEditor;
          }
          const current = hooks.settings();
          return params.items.map((item, i) => answerConfigurationItem(item.section, current) ?? fromEditor[i]);
        },
        // Settings are pushed by the extension itself (with the token), not by the generic sync.
        didChangeConfiguration: async () => undefined,
      },
    },
  };
  return new LanguageClient('souffleur', 'Souffleur', serverOptions, clientOptions);
}

function anchorOf(document: vscode.TextDocument, position: vscode.Position): Anchor {
  return {
    uri: document.uri.toString(),
    line: position.line,
    linePrefix: document.lineAt(position.line).text.slice(0, position.character),
  };
}

/**
 * Makes items without a range insert at the cursor, gives each item that names its completion the
 * extension's accept command (so acceptance is seen), and returns what the dismissal tracker needs
 * to know about them.
 */
function rewriteItems(
  items: vscode.InlineCompletionItem[],
  document: vscode.TextDocument,
  position: vscode.Position,
): Array<{ ref: CompletionRef; text: string }> {
  const offered: Array<{ ref: CompletionRef; text: string }> = [];
  for (const item of items) {
    // Without a range VS Code replaces the word at the cursor, so a suggestion that does not start
    // with that word would never show; Souffleur's completions are insertions at the cursor.
    if (!item.range) {
      item.range = new vscode.Range(position, position);
    }
    const ref = completionRefFromArguments(item.command?.arguments);
    if (!ref) {
      continue;
    }
    item.command = { title: 'Souffleur: accepted', command: ACCEPT_COMMAND, arguments: [ref] };
    const insert = typeof item.insertText === 'string' ? item.insertText : item.insertText.value;
    let before = '';
    if (item.range && item.range.start.isBefore(position)) {
      before = document.getText(new vscode.Range(item.range.start, position));
    }
    offered.push({ ref, text: textAfterCursor(insert, before) });
  }
  return offered;
}
