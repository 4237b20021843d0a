// Settings → how to start souffleur-lsp and what to tell it. Pure (no `vscode` import).

export const DEFAULT_URL = 'http://127.0.0.1:8347';
export const SERVER_BINARY = 'souffleur-lsp';

/** The executable's file name on this platform. */
export function binaryName(platform: string = process.platform): string {
  return platform === 'win32' ? `${SERVER_BINARY}.exe` : SERVER_BINARY;
}

/**
 * Which souffleur-lsp to run: the `souffleur.serverPath` setting when set; else the binary bundled
 * in the extension's `bin/` when it exists; else `souffleur-lsp` looked up on PATH.
 */
export function resolveServerCommand(
  setting: string | undefined,
  bundledPath: string,
  exists: (path: string) => boolean,
): { command: string; source: 'setting' | 'bundled' | 'path' } {
  const configured = (setting ?? '').trim();
  if (configured !== '') {
    return { command: expandHome(configured), source: 'setting' };
  }
  if (exists(bundledPath)) {
    return { command: bundledPath, source: 'bundled' };
  }
  return { command: SERVER_BINARY, source: 'path' };
}

function expandHome(path: string): string {
  const home = process.env.HOME ?? process.env.USERPROFILE;
  if (home && (path === '~' || path.startsWith('~/'))) {
    return home + path.slice(1);
  }
  return path;
}

/**
 * The server URL without trailing slashes; the default when empty. Throws on something that is not
 * an http(s) URL, so a typo is reported instead of silently failing every request.
 */
export function normalizeUrl(raw: string | undefined): string {
  const trimmed = (raw ?? '').trim();
  const url = trimmed === '' ? DEFAULT_URL : trimmed;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`souffleur.url is not a URL: ${JSON.stringify(url)}`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new Error(`souffleur.url must be http:// or https://, not ${parsed.protocol}`);
  }
  return url.replace(/\/+$/, '');
}

/** What the language server receives: as initializationOptions and as didChangeConfiguration. */
export interface ServerSettings {
  url: string;
  token: string;
}

export function initializationOptions(url: string, token: string | undefined): ServerSettings {
  return { url, token: token ?? '' };
}

/** `workspace/didChangeConfiguration` params: `{settings: {souffleur: {url, token}}}`. */
export function didChangeConfigurationParams(settings: ServerSettings): { settings: { souffleur: ServerSettings } } {
  return { settings: { souffleur: { ...settings } } };
}

/**
 * Answers a `workspace/configuration` item asking for `souffleur`, `souffleur.url` or
 * `souffleur.token` (the token lives in SecretStorage, not in the settings the editor knows).
 * Returns `undefined` for other sections, which are left to the editor.
 */
export function answerConfigurationItem(section: string | undefined, settings: ServerSettings): unknown {
  switch (section) {
    case 'souffleur':
      return { ...settings };
    case 'souffleur.url':
      return settings.url;
    case 'souffleur.token':
      return settings.token;
    default:
      return undefined;
  }
}

/** Authorization header for the HTTP API, if a token is set. */
export function authHeaders(token: string | undefined): Record<string, string> {
  return token ? { Authorization: `Bearer ${token}` } : {};
}
