// Small HTTP helpers over the global `fetch` (Node 18+, as in every VS Code ≥ 1.91). Pure of
// `vscode`; the fetch function is injectable for tests.

import { authHeaders } from './config';

export type FetchFn = typeof fetch;

export interface HealthResult {
  ok: boolean;
  /** Why not ok (status code or connection error). */
  message?: string;
  model?: string;
}

/** Runs `fetch` with a time limit. */
export async function fetchWithTimeout(
  fetchFn: FetchFn,
  url: string,
  init: RequestInit,
  timeoutMs: number,
): Promise<Response> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    return await fetchFn(url, { ...init, signal: controller.signal });
  } finally {
    clearTimeout(timer);
  }
}

/** The message of a failed fetch: the cause's code (ECONNREFUSED…) where node gives one. */
export function describeFetchError(error: unknown): string {
  if (error instanceof Error) {
    if (error.name === 'AbortError') {
      return 'timed out';
    }
    const cause = (error as { cause?: unknown }).cause;
    if (cause && typeof cause === 'object') {
      const code = (cause as { code?: unknown }).code;
      const message = (cause as { message?: unknown }).message;
      if (typeof code === 'string') {
        return code;
      }
      if (typeof message === 'string') {
        return message;
      }
    }
    return error.message;
  }
  return String(error);
}

/** `GET {url}/v1/health` (no token needed). */
export async function checkHealth(fetchFn: FetchFn, baseUrl: string, timeoutMs = 3000): Promise<HealthResult> {
  let response: Response;
  try {
    response = await fetchWithTimeout(fetchFn, `${baseUrl}/v1/health`, { method: 'GET' }, timeoutMs);
  } catch (error) {
    return { ok: false, message: `${baseUrl} unreachable (${describeFetchError(error)})` };
  }
  if (!response.ok) {
    return { ok: false, message: `${baseUrl}/v1/health answered ${response.status}` };
  }
  let model: string | undefined;
  try {
    const body = (await response.json()) as unknown;
    if (body && typeof body === 'object') {
      const m = (body as { model?: unknown }).model;
      if (typeof m === 'string') {
        model = m;
      } else if (m && typeof m === 'object' && typeof (m as { name?: unknown }).name === 'string') {
        model = (m as { name: string }).name;
      }
    }
  } catch {
    // A health answer that is not JSON still means the server is up.
  }
  return { ok: true, model };
}

/** JSON POST with the token, returning the status and the parsed body (undefined if not JSON). */
export async function postJson(
  fetchFn: FetchFn,
  url: string,
  token: string | undefined,
  body: unknown,
  timeoutMs: number,
): Promise<{ status: number; body: unknown; text: string }> {
  const response = await fetchWithTimeout(
    fetchFn,
    url,
    {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...authHeaders(token) },
      body: JSON.stringify(body),
    },
    timeoutMs,
  );
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return { status: response.status, body: parsed, text };
}

/** The message of Souffleur's error shape `{"error": {"message": …}}`, if the body has one. */
export function errorMessage(body: unknown): string | undefined {
  if (body && typeof body === 'object') {
    const error = (body as { error?: unknown }).error;
    if (error && typeof error === 'object') {
      const message = (error as { message?: unknown }).message;
      if (typeof message === 'string') {
        return message;
      }
    }
  }
  return undefined;
}
