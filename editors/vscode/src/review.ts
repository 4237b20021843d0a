// "Review my changes": POST the workspace's diff to `{url}/v1/review`, validate the answer and map
// its findings to diagnostics. Pure of `vscode` (the extension turns `DiagnosticSpec` into
// `vscode.Diagnostic`); fetch and the file-existence check are injected.

import * as path from 'node:path';
import { describeFetchError, errorMessage, FetchFn, postJson } from './http';

export type Severity = 'error' | 'warning' | 'information' | 'hint';

export interface Finding {
  path: string;
  /** 1-based line in the new version of the file (0 or missing: the whole file, shown on line 1). */
  line: number;
  severity: Severity;
  message: string;
}

export interface ReviewResult {
  findings: Finding[];
  summary: string;
}

export type ReviewOutcome =
  | { kind: 'ok'; result: ReviewResult }
  /** 404: this Souffleur server has no review API (yet). */
  | { kind: 'unavailable'; message: string }
  /** 401/403: token missing, invalid or without the needed role. */
  | { kind: 'unauthorized'; message: string }
  | { kind: 'error'; message: string };

/** Maps the server's severity words to diagnostic severities; unknown words become warnings. */
export function normalizeSeverity(raw: unknown): Severity {
  const word = typeof raw === 'string' ? raw.trim().toLowerCase() : '';
  switch (word) {
    case 'error':
    case 'critical':
    case 'blocker':
    case 'high':
      return 'error';
    case 'info':
    case 'information':
    case 'low':
      return 'information';
    case 'hint':
    case 'note':
    case 'nit':
    case 'suggestion':
      return 'hint';
    default:
      return 'warning';
  }
}

/** Validates the review answer; throws with a message naming what is wrong. */
export function parseReviewResponse(body: unknown): ReviewResult {
  if (!body || typeof body !== 'object' || Array.isArray(body)) {
    throw new Error('review answer is not a JSON object');
  }
  const raw = body as { findings?: unknown; summary?: unknown };
  if (raw.findings !== undefined && !Array.isArray(raw.findings)) {
    throw new Error('review answer: "findings" is not an array');
  }
  const findings: Finding[] = [];
  for (const [i, item] of ((raw.findings as unknown[] | undefined) ?? []).entries()) {
    if (!item || typeof item !== 'object') {
      throw new Error(`review answer: findings[${i}] is not an object`);
    }
    const f = item as { path?: unknown; line?: unknown; severity?: unknown; message?: unknown };
    if (typeof f.path !== 'string' || f.path === '') {
      throw new Error(`review answer: findings[${i}].path is missing`);
    }
    if (typeof f.message !== 'string') {
      throw new Error(`review answer: findings[${i}].message is missing`);
    }
    const line = typeof f.line === 'number' && Number.isFinite(f.line) ? Math.max(0, Math.floor(f.line)) : 0;
    findings.push({ path: f.path, line, severity: normalizeSeverity(f.severity), message: f.message });
  }
  const summary = typeof raw.summary === 'string' ? raw.summary : '';
  return { findings, summary };
}

/** POSTs `{"diff": …}` and classifies the answer. Never throws. */
export async function requestReview(
  fetchFn: FetchFn,
  baseUrl: string,
  token: string | undefined,
  diff: string,
  timeoutMs = 300_000,
): Promise<ReviewOutcome> {
  let answer: { status: number; body: unknown; text: string };
  try {
    answer = await postJson(fetchFn, `${baseUrl}/v1/review`, token, { diff }, timeoutMs);
  } catch (error) {
    return { kind: 'error', message: `could not reach ${baseUrl} (${describeFetchError(error)})` };
  }
  const detail = errorMessage(answer.body) ?? answer.text.slice(0, 200);
  if (answer.status === 404) {
    return {
      kind: 'unavailable',
      message: `this Souffleur server (${baseUrl}) has no review API yet (404). Update the server to use "Review My Changes".`,
    };
  }
  if (answer.status === 401 || answer.status === 403) {
    return {
      kind: 'unauthorized',
      message: `the server refused the token (${answer.status}${detail ? `: ${detail}` : ''}). Use "Souffleur: Set Token".`,
    };
  }
  if (answer.status === 413) {
    return { kind: 'error', message: `the diff is too large for the server (413${detail ? `: ${detail}` : ''})` };
  }
  if (answer.status < 200 || answer.status >= 300) {
    return { kind: 'error', message: `review failed with ${answer.status}${detail ? `: ${detail}` : ''}` };
  }
  try {
    return { kind: 'ok', result: parseReviewResponse(answer.body) };
  } catch (error) {
    return { kind: 'error', message: (error as Error).message };
  }
}

/** One diagnostic to show, in editor coordinates (0-based line). */
export interface DiagnosticSpec {
  line: number;
  severity: Severity;
  message: string;
}

/**
 * Resolves a finding's path against the repository root. Paths in a unified diff carry `a/` or
 * `b/` prefixes; such a prefix is dropped when the file exists without it and not with it.
 * Absolute paths and paths that leave the root are kept as given (absolute) or dropped (outside).
 */
export function resolveFindingPath(root: string, findingPath: string, exists: (p: string) => boolean): string | undefined {
  let rel = findingPath.replace(/\\/g, '/');
  if (path.isAbsolute(rel)) {
    return path.normalize(rel);
  }
  if (/^[ab]\//.test(rel)) {
    const stripped = rel.slice(2);
    if (!exists(path.join(root, rel)) && exists(path.join(root, stripped))) {
      rel = stripped;
    }
  }
  const full = path.normalize(path.join(root, rel));
  const relBack = path.relative(root, full);
  if (relBack.startsWith('..') || path.isAbsolute(relBack)) {
    return undefined;
  }
  return full;
}

/** Groups findings by absolute file path; findings whose path leaves the repository are dropped. */
export function findingsToDiagnostics(
  root: string,
  findings: readonly Finding[],
  exists: (p: string) => boolean,
): Map<string, DiagnosticSpec[]> {
  const byFile = new Map<string, DiagnosticSpec[]>();
  for (const finding of findings) {
    const file = resolveFindingPath(root, finding.path, exists);
    if (file === undefined) {
      continue;
    }
    const specs = byFile.get(file) ?? [];
    specs.push({ line: Math.max(0, finding.line - 1), severity: finding.severity, message: finding.message });
    byFile.set(file, specs);
  }
  for (const specs of byFile.values()) {
    specs.sort((a, b) => a.line - b.line);
  }
  return byFile;
}

/** Plain-text report for the output channel: `path:line: severity: message` lines and the summary. */
export function formatReport(root: string, result: ReviewResult): string {
  const lines = [`Review of ${root}: ${result.findings.length} finding(s)`];
  for (const f of result.findings) {
    lines.push(`  ${f.path}:${f.line > 0 ? f.line : 1}: ${f.severity}: ${f.message}`);
  }
  if (result.summary.trim() !== '') {
    lines.push('', 'Summary:', ...result.summary.trim().split('\n').map((l) => `  ${l}`));
  }
  return lines.join('\n');
}
