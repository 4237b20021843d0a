// Acceptance telemetry: which completion the user took, and which ones they passed by. Pure.
//
// Contract with souffleur-lsp: each InlineCompletionItem it returns carries a `command` whose
// first argument is `{"completion_id": …, "choice_index": …}` (the command's name does not matter:
// the extension replaces it with its own, so the server should not list it in
// executeCommandProvider). VS Code runs an item's command when the user accepts the item; the
// extension then sends `souffleur/accepted` with those params. Items without such an argument get
// no telemetry.
//
// VS Code has no stable "inline suggestion dismissed" event, so `souffleur/dismissed` is inferred:
// a suggestion counts as dismissed when the next request comes from somewhere the user could not
// have reached by typing the suggestion itself (another file, another line, or text that departs
// from the suggestion), or when the editor moves on without accepting it.

export const ACCEPTED_NOTIFICATION = 'souffleur/accepted';
export const DISMISSED_NOTIFICATION = 'souffleur/dismissed';

export interface CompletionRef {
  completion_id: string;
  choice_index: number;
}

/** Reads `{completion_id, choice_index}` from a command's arguments (object or positional form). */
export function completionRefFromArguments(args: readonly unknown[] | undefined): CompletionRef | undefined {
  if (!args || args.length === 0) {
    return undefined;
  }
  const first = args[0];
  if (first && typeof first === 'object' && !Array.isArray(first)) {
    const o = first as { completion_id?: unknown; choice_index?: unknown; completionId?: unknown; choiceIndex?: unknown };
    const id = o.completion_id ?? o.completionId;
    const index = o.choice_index ?? o.choiceIndex ?? 0;
    if ((typeof id === 'string' && id !== '') || typeof id === 'number') {
      return { completion_id: String(id), choice_index: typeof index === 'number' ? index : Number(index) || 0 };
    }
    return undefined;
  }
  if (typeof first === 'string' && first !== '') {
    const index = typeof args[1] === 'number' ? args[1] : 0;
    return { completion_id: first, choice_index: index };
  }
  return undefined;
}

/** Where a suggestion was offered: the document, the cursor line, and the line's text before the cursor. */
export interface Anchor {
  uri: string;
  line: number;
  linePrefix: string;
}

interface Shown {
  ref: CompletionRef;
  anchor: Anchor;
  /** The suggestion's text up to its first line end (what the user can type through on this line). */
  firstLine: string;
}

/**
 * Tracks the suggestions last offered and decides when they were passed by. `offered` records a
 * new answer; `request` is called at each new request and returns the refs now dismissed;
 * `accepted` marks one taken (the others of the same answer are then not reported as dismissed).
 */
export class DismissalTracker {
  private shown: Shown[] = [];
  private readonly reported = new Set<string>();

  /**
   * Records the suggestions of one answer (each with its text). They replace the ones still
   * pending: those survived `request`, so the user was typing them, which is no dismissal.
   */
  offered(anchor: Anchor, items: ReadonlyArray<{ ref: CompletionRef; text: string }>): void {
    if (items.length === 0) {
      return; // VS Code keeps showing a suggestion the user is typing through
    }
    this.shown = items.map((item) => ({ ref: item.ref, anchor, firstLine: item.text.split(/\r?\n/, 1)[0] ?? '' }));
  }

  /** A new request at `anchor`: returns the suggestions the user has passed by (once each). */
  request(anchor: Anchor): CompletionRef[] {
    const keep: Shown[] = [];
    const dismissed: CompletionRef[] = [];
    for (const s of this.shown) {
      if (typingThrough(s, anchor)) {
        keep.push(s);
      } else {
        dismissed.push(s.ref);
      }
    }
    this.shown = keep;
    return this.dedupe(dismissed);
  }

  /** The user took `ref`: nothing of its answer is reported as dismissed. */
  accepted(ref: CompletionRef): void {
    this.shown = this.shown.filter((s) => s.ref.completion_id !== ref.completion_id);
    this.reported.add(key(ref));
  }

  /** Everything still pending is dismissed (editor closed, extension disabled). */
  flush(): CompletionRef[] {
    const all = this.shown.map((s) => s.ref);
    this.shown = [];
    return this.dedupe(all);
  }

  private dedupe(refs: CompletionRef[]): CompletionRef[] {
    const out: CompletionRef[] = [];
    for (const ref of refs) {
      const k = key(ref);
      if (!this.reported.has(k)) {
        this.reported.add(k);
        out.push(ref);
      }
    }
    if (this.reported.size > 10_000) {
      this.reported.clear();
    }
    return out;
  }
}

function key(ref: CompletionRef): string {
  return `${ref.completion_id}#${ref.choice_index}`;
}

/** True if the text typed since the suggestion was offered is a beginning of the suggestion. */
function typingThrough(shown: Shown, now: Anchor): boolean {
  if (now.uri !== shown.anchor.uri || now.line !== shown.anchor.line) {
    return false;
  }
  if (!now.linePrefix.startsWith(shown.anchor.linePrefix)) {
    return false;
  }
  const typed = now.linePrefix.slice(shown.anchor.linePrefix.length);
  return shown.firstLine.startsWith(typed);
}

/**
 * The part of an inline suggestion that lies after the cursor: `insertText` replaces `range`, which
 * may start before the cursor (`textBeforeCursorInRange` is the document's text from the range's
 * start to the cursor); that part is stripped when the suggestion repeats it.
 */
export function textAfterCursor(insertText: string, textBeforeCursorInRange: string): string {
  return insertText.startsWith(textBeforeCursorInRange) ? insertText.slice(textBeforeCursorInRange.length) : insertText;
}
