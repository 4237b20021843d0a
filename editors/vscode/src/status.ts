// The status bar's state machine. Pure: no `vscode` import, so it is unit-tested in plain node.
//
// Inputs are events from the extension (setting toggled, language client state, health checks of
// the Souffleur HTTP server, completion requests starting and finishing); the output is a view
// (`ready` / `working` / `error` / `disabled` / `starting`) with the text and tooltip to show.

/** State of the language client (souffleur-lsp process). */
export type ClientState = 'stopped' | 'starting' | 'running' | 'failed';
/** What the last health check of the Souffleur HTTP server said. */
export type ServerState = 'unknown' | 'up' | 'down';

export interface StatusState {
  readonly enabled: boolean;
  readonly client: ClientState;
  readonly server: ServerState;
  /** Completion requests in flight. */
  readonly inFlight: number;
  /** Why the client failed to start or the server is down. */
  readonly problem?: string;
  /** The last completion request failed (cleared by the next one that succeeds). */
  readonly requestError?: string;
  /** The server's model, from its health answer. */
  readonly model?: string;
}

export type StatusEvent =
  | { readonly type: 'enabled'; readonly value: boolean }
  | { readonly type: 'clientStarting' }
  | { readonly type: 'clientRunning' }
  | { readonly type: 'clientStopped' }
  | { readonly type: 'clientFailed'; readonly message: string }
  | { readonly type: 'health'; readonly ok: boolean; readonly message?: string; readonly model?: string }
  | { readonly type: 'requestStarted' }
  | { readonly type: 'requestFinished'; readonly error?: string };

export type StatusKind = 'disabled' | 'starting' | 'working' | 'ready' | 'error';

export interface StatusView {
  readonly kind: StatusKind;
  /** Status bar text, with a codicon. */
  readonly text: string;
  readonly tooltip: string;
}

export function initialStatus(enabled: boolean): StatusState {
  return { enabled, client: 'stopped', server: 'unknown', inFlight: 0 };
}

export function reduce(state: StatusState, event: StatusEvent): StatusState {
  switch (event.type) {
    case 'enabled':
      return event.value
        ? { ...state, enabled: true }
        : { ...state, enabled: false, inFlight: 0, requestError: undefined };
    case 'clientStarting':
      return { ...state, client: 'starting', inFlight: 0, problem: state.server === 'down' ? state.problem : undefined };
    case 'clientRunning':
      return { ...state, client: 'running', problem: state.server === 'down' ? state.problem : undefined };
    case 'clientStopped':
      return { ...state, client: 'stopped', inFlight: 0 };
    case 'clientFailed':
      return { ...state, client: 'failed', inFlight: 0, problem: event.message };
    case 'health':
      if (event.ok) {
        return {
          ...state,
          server: 'up',
          model: event.model ?? state.model,
          problem: state.client === 'failed' ? state.problem : undefined,
        };
      }
      return {
        ...state,
        server: 'down',
        problem: state.client === 'failed' ? state.problem : event.message ?? 'Souffleur server unreachable',
      };
    case 'requestStarted':
      return { ...state, inFlight: state.inFlight + 1 };
    case 'requestFinished':
      return {
        ...state,
        inFlight: Math.max(0, state.inFlight - 1),
        requestError: event.error,
      };
  }
}

export function view(state: StatusState): StatusView {
  if (!state.enabled) {
    return { kind: 'disabled', text: '$(circle-slash) Souffleur', tooltip: 'Souffleur: disabled (click for actions)' };
  }
  if (state.client === 'failed') {
    return { kind: 'error', text: '$(error) Souffleur', tooltip: `Souffleur: language server failed: ${state.problem ?? 'unknown error'}` };
  }
  if (state.server === 'down') {
    return { kind: 'error', text: '$(error) Souffleur', tooltip: `Souffleur: server down: ${state.problem ?? 'unreachable'}` };
  }
  if (state.client === 'starting' || state.client === 'stopped') {
    return { kind: 'starting', text: '$(loading~spin) Souffleur', tooltip: 'Souffleur: starting the language server' };
  }
  if (state.inFlight > 0) {
    return { kind: 'working', text: '$(sync~spin) Souffleur', tooltip: 'Souffleur: completing…' };
  }
  if (state.requestError !== undefined) {
    return { kind: 'error', text: '$(warning) Souffleur', tooltip: `Souffleur: last request failed: ${state.requestError}` };
  }
  const model = state.model ? ` (${state.model})` : '';
  return { kind: 'ready', text: '$(check) Souffleur', tooltip: `Souffleur: ready${model}` };
}
