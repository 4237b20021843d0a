//! The language server: LSP requests in, Souffleur completions out.
//!
//! A completion request goes through, in order: the type-through check ([`reuse`]); the
//! debounce ([`debounce`], skipped for an explicitly invoked inline completion); the
//! request built from the document and the gathered [`context`]; the HTTP call, raced
//! against newer requests and edits. `$/cancelRequest` drops the handler's future (the
//! tower-lsp-server runtime does that), which drops the HTTP call and its connection.
//!
//! A server that is down (or refuses the token, or is misconfigured) is told to the user
//! once with `window/showMessage`; the next successful answer or a configuration change
//! re-arms the message.
//!
//! [`reuse`]: crate::reuse
//! [`debounce`]: crate::debounce
//! [`context`]: crate::context

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tower_lsp_server::jsonrpc::{Error, Result};
use tower_lsp_server::ls_types::{
    Command, CompletionItem, CompletionItemKind, CompletionList, CompletionOptions,
    CompletionParams, CompletionResponse, CompletionTextEdit, DidChangeConfigurationParams,
    DidChangeTextDocumentParams, DidCloseTextDocumentParams, DidOpenTextDocumentParams,
    Documentation, ExecuteCommandOptions, ExecuteCommandParams, InitializeParams, InitializeResult,
    InitializedParams, InlineCompletionItem, InlineCompletionList, InlineCompletionParams,
    InlineCompletionResponse, InlineCompletionTriggerKind, InsertTextFormat, LSPAny, MarkupContent,
    MarkupKind, MessageType, OneOf, Position, Range, ServerCapabilities, ServerInfo,
    TextDocumentSyncCapability, TextDocumentSyncKind, TextDocumentSyncOptions, TextEdit, Uri,
};
use tower_lsp_server::{Client, LanguageServer, LspService, Server};

use crate::client::{
    ClientError, CompletionRequest, Declaration, ErrorKind, EventKind, Segments, SnippetBody,
    SouffleurClient,
};
use crate::config::Config;
use crate::context;
use crate::debounce::Debouncer;
use crate::documents::{Document, Documents};
use crate::framing;
use crate::git;
use crate::reuse::LastAnswer;
use crate::telemetry::{
    self, ACCEPTED_COMMAND, ACCEPTED_NOTIFICATION, DISMISSED_COMMAND, DISMISSED_NOTIFICATION,
    EventParams,
};

/// Text before the cursor sent at most (cut at a line start); the server keeps less.
const MAX_PREFIX_BYTES: usize = 16_000;
/// Text after the cursor sent at most (cut at a line end).
const MAX_SUFFIX_BYTES: usize = 4_000;
/// Requests handled at once (the rest wait in tower-lsp-server's queue).
const CONCURRENCY: usize = 32;
/// Wait after `initialized` before checking the server.
const HEALTH_CHECK_DELAY: Duration = Duration::from_millis(300);
/// Longest completion-item label.
const MAX_LABEL_CHARS: usize = 80;

/// Serves the language server on stdin/stdout until the client exits.
pub async fn run_stdio() {
    let (service, socket) = LspService::build(Backend::new)
        .custom_method("textDocument/inlineCompletion", Backend::inline_completion)
        .custom_method(ACCEPTED_NOTIFICATION, Backend::accepted)
        .custom_method(DISMISSED_NOTIFICATION, Backend::dismissed)
        .finish();
    let (frames_in, frames_out) = tokio::io::duplex(1 << 16);
    tokio::spawn(async move {
        if let Err(e) = framing::forward_valid_frames(tokio::io::stdin(), frames_in).await {
            eprintln!("souffleur-lsp: reading stdin: {e}");
        }
    });
    Server::new(frames_out, tokio::io::stdout(), socket)
        .concurrency_level(CONCURRENCY)
        .serve(service)
        .await;
}

/// The language server's state, shared with background tasks.
#[derive(Debug)]
struct Shared {
    config: RwLock<Config>,
    documents: Mutex<Documents>,
    last: Mutex<Option<LastAnswer>>,
    debouncer: Debouncer,
    /// Problem kinds already told to the user since the last success.
    reported: Mutex<HashSet<ErrorKind>>,
}

/// The `LanguageServer` implementation.
#[derive(Debug)]
pub struct Backend {
    client: Client,
    shared: Arc<Shared>,
}

/// A completion ready to hand to the editor.
#[derive(Debug)]
struct Ghost {
    /// Text to insert at the cursor.
    text: String,
    completion_id: String,
    /// The cursor, clamped to the document.
    position: Position,
    /// The identifier being typed before the cursor, and its range.
    word: String,
    word_range: Range,
    language_id: String,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn config(&self) -> Config {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Tells the user about `error` unless its kind was told since the last success.
    async fn report(&self, client: &Client, error: &ClientError) {
        let kind = error.kind();
        if kind == ErrorKind::Other {
            client
                .log_message(MessageType::WARNING, format!("souffleur: {error}"))
                .await;
            return;
        }
        if !lock(&self.reported).insert(kind) {
            return;
        }
        let hint = match kind {
            ErrorKind::Down => {
                "Completions resume when it answers again. Start it with `souffleur serve`, or set \
                 `url` in initializationOptions / `souffleur.url` in settings / SOUFFLEUR_URL."
            }
            ErrorKind::Auth => {
                "Set `token` in initializationOptions / `souffleur.token` in settings / \
                 SOUFFLEUR_TOKEN (create one with `souffleur token create`)."
            }
            ErrorKind::Config | ErrorKind::Other => {
                "Fix `url` in initializationOptions / `souffleur.url` in settings / SOUFFLEUR_URL."
            }
        };
        client
            .show_message(MessageType::WARNING, format!("Souffleur: {error}. {hint}"))
            .await;
    }

    fn succeeded(&self) {
        lock(&self.reported).clear();
    }
}

impl Backend {
    /// A backend talking to `client`, configured from the environment until the client
    /// sends its options.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            shared: Arc::new(Shared {
                config: RwLock::new(Config::from_env()),
                documents: Mutex::new(Documents::default()),
                last: Mutex::new(None),
                debouncer: Debouncer::new(),
                reported: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// `textDocument/inlineCompletion` (LSP 3.18): the ghost text at the cursor.
    pub async fn inline_completion(
        &self,
        params: InlineCompletionParams,
    ) -> Result<Option<InlineCompletionResponse>> {
        let position = params.text_document_position;
        // With the suggest widget open the ghost text would have to extend its selection;
        // stay quiet rather than propose something the editor will not show.
        let items = if params.context.selected_completion_info.is_some() {
            Vec::new()
        } else {
            let explicit = params.context.trigger_kind == InlineCompletionTriggerKind::INVOKED;
            self.ghost(position.text_document.uri, position.position, explicit)
                .await
                .map(|g| {
                    vec![InlineCompletionItem {
                        insert_text: g.text.clone(),
                        filter_text: None,
                        range: Some(Range::new(g.position, g.position)),
                        command: Some(accepted_command(&g.completion_id)),
                        insert_text_format: Some(InsertTextFormat::PLAIN_TEXT),
                    }]
                })
                .unwrap_or_default()
        };
        Ok(Some(InlineCompletionResponse::List(InlineCompletionList {
            items,
        })))
    }

    /// `souffleur/accepted`: forwards a `select` event.
    pub async fn accepted(&self, params: EventParams) {
        self.send_event(EventKind::Select, params);
    }

    /// `souffleur/dismissed`: forwards a `dismiss` event.
    pub async fn dismissed(&self, params: EventParams) {
        self.send_event(EventKind::Dismiss, params);
    }

    /// Posts an event in the background; failures are only logged.
    fn send_event(&self, kind: EventKind, params: EventParams) {
        let api = SouffleurClient::new(&self.shared.config());
        let client = self.client.clone();
        tokio::spawn(async move {
            if let Err(e) = api
                .event(kind, &params.completion_id, params.choice_index)
                .await
            {
                client
                    .log_message(
                        MessageType::WARNING,
                        format!("souffleur: event not sent: {e}"),
                    )
                    .await;
            }
        });
    }

    /// The completion at `position`: reused from the last answer, or asked from the server
    /// after the debounce. `None` when there is nothing to show (or the request was
    /// superseded, or the server failed).
    async fn ghost(&self, uri: Uri, position: Position, explicit: bool) -> Option<Ghost> {
        let started = Instant::now();
        if let Some(ghost) = self.reused(&uri, position) {
            self.trace(&ghost, started, None).await;
            return Some(ghost).filter(|g| !g.text.is_empty());
        }
        let shared = &self.shared;
        let ticket = shared.debouncer.ticket();
        let config = shared.config();
        let delay = if explicit {
            Duration::ZERO
        } else {
            config.debounce
        };
        if !shared.debouncer.settle(ticket, delay).await {
            return None;
        }
        let (request, mut ghost, prefix, suffix) = self.build_request(&uri, position)?;
        let api = SouffleurClient::new(&config);
        let http_started = Instant::now();
        let result = tokio::select! {
            result = api.complete(&request) => result,
            () = shared.debouncer.superseded(ticket) => return None,
        };
        let http_time = http_started.elapsed();
        match result {
            Ok(answer) => {
                shared.succeeded();
                let text = answer
                    .choices
                    .first()
                    .map(|c| c.text.clone())
                    .unwrap_or_default();
                ghost.text.clone_from(&text);
                ghost.completion_id.clone_from(&answer.id);
                *lock(&shared.last) = Some(LastAnswer {
                    uri,
                    prefix,
                    suffix,
                    completion_id: answer.id.clone(),
                    text,
                });
                self.trace(&ghost, started, Some(http_time)).await;
                if ghost.text.is_empty() {
                    return None;
                }
                let api = api.clone();
                tokio::spawn(async move {
                    let _ = api.event(EventKind::View, &answer.id, 0).await;
                });
                Some(ghost)
            }
            Err(error) => {
                shared.report(&self.client, &error).await;
                None
            }
        }
    }

    /// The rest of the last answer if the user typed through it (no HTTP call).
    fn reused(&self, uri: &Uri, position: Position) -> Option<Ghost> {
        let docs = lock(&self.shared.documents);
        let doc = docs.get(uri)?;
        let (prefix, suffix) = doc.split_at(position);
        let reused = lock(&self.shared.last)
            .as_ref()?
            .reuse(uri, prefix, suffix)?;
        let mut ghost = ghost_at(doc, position);
        ghost.text = reused.text;
        ghost.completion_id = reused.completion_id;
        Some(ghost)
    }

    /// The HTTP request for `position`, a ghost without text, and the full prefix/suffix.
    fn build_request(
        &self,
        uri: &Uri,
        position: Position,
    ) -> Option<(CompletionRequest, Ghost, String, String)> {
        let docs = lock(&self.shared.documents);
        let doc = docs.get(uri)?;
        let (prefix, suffix) = doc.split_at(position);
        let gathered = context::gather(&docs, uri, position);
        let language = Some(doc.language_id.clone())
            .filter(|l| !l.is_empty() && l != "plaintext" && l != "unknown");
        let request = CompletionRequest {
            language,
            segments: Segments {
                prefix: tail_at_line(prefix, MAX_PREFIX_BYTES).to_string(),
                suffix: head_at_line(suffix, MAX_SUFFIX_BYTES).to_string(),
                filepath: doc.filepath.clone(),
                git_url: doc.git_url.clone(),
                declarations: gathered
                    .declarations
                    .into_iter()
                    .map(|d| Declaration {
                        filepath: d.filepath,
                        body: d.body,
                    })
                    .collect(),
                relevant_snippets_from_changed_files: gathered
                    .snippets
                    .into_iter()
                    .map(|s| SnippetBody {
                        filepath: s.filepath,
                        body: s.body,
                        score: s.score,
                    })
                    .collect(),
            },
            user: None,
        };
        Some((
            request,
            ghost_at(doc, position),
            prefix.to_string(),
            suffix.to_string(),
        ))
    }

    /// With `trace` on, one `window/logMessage` per completion with its timings.
    async fn trace(&self, ghost: &Ghost, started: Instant, http: Option<Duration>) {
        if !self.shared.config().trace {
            return;
        }
        let http_us = http.map_or(0, |d| d.as_micros());
        let message = format!(
            "souffleur-lsp completion: line={} character={} reused={} http_us={} total_us={} chars={}",
            ghost.position.line,
            ghost.position.character,
            http.is_none(),
            http_us,
            started.elapsed().as_micros(),
            ghost.text.chars().count()
        );
        self.client.log_message(MessageType::LOG, message).await;
    }
}

/// A ghost (without text yet) at the clamped `position` of `doc`.
fn ghost_at(doc: &Document, position: Position) -> Ghost {
    let position = doc.position_at(doc.offset_at(position));
    let (word_range, word) = doc.word_before(position);
    Ghost {
        text: String::new(),
        completion_id: String::new(),
        position,
        word: word.to_string(),
        word_range,
        language_id: doc.language_id.clone(),
    }
}

/// The command an item carries so that accepting it reports a `select` event.
fn accepted_command(completion_id: &str) -> Command {
    Command {
        title: "Souffleur: completion accepted".into(),
        command: ACCEPTED_COMMAND.into(),
        arguments: Some(vec![
            json!({"completion_id": completion_id, "choice_index": 0}),
        ]),
    }
}

/// The completion item for clients without inline completion: it replaces the word
/// being typed by that word plus the ghost text, so the client's filtering keeps it.
fn completion_item(ghost: &Ghost) -> CompletionItem {
    let new_text = format!("{}{}", ghost.word, ghost.text);
    let first_line = new_text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let mut label: String = first_line.chars().take(MAX_LABEL_CHARS).collect();
    if new_text.trim() != label {
        label.push('…');
    }
    CompletionItem {
        label,
        kind: Some(CompletionItemKind::TEXT),
        detail: Some("Souffleur".into()),
        documentation: Some(Documentation::MarkupContent(MarkupContent {
            kind: MarkupKind::Markdown,
            value: format!("```{}\n{}\n```", ghost.language_id, new_text),
        })),
        preselect: Some(true),
        sort_text: Some("0".into()),
        filter_text: Some(new_text.clone()),
        insert_text: Some(new_text.clone()),
        insert_text_format: Some(InsertTextFormat::PLAIN_TEXT),
        text_edit: Some(CompletionTextEdit::Edit(TextEdit {
            range: ghost.word_range,
            new_text,
        })),
        command: Some(accepted_command(&ghost.completion_id)),
        ..CompletionItem::default()
    }
}

/// At most `max` bytes from the end of `text`, starting at a line start when possible.
fn tail_at_line(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    match text[start..].find('\n') {
        Some(i) if start + i + 1 < text.len() => &text[start + i + 1..],
        _ => &text[start..],
    }
}

/// At most `max` bytes from the start of `text`, ending after a line break when possible.
fn head_at_line(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    match text[..end].rfind('\n') {
        Some(i) if i > 0 => &text[..=i],
        _ => &text[..end],
    }
}

impl LanguageServer for Backend {
    async fn initialize(&self, params: InitializeParams) -> Result<InitializeResult> {
        if let Some(options) = &params.initialization_options {
            self.shared
                .config
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .apply_init_options(options);
        }
        let inline = params
            .capabilities
            .text_document
            .as_ref()
            .and_then(|t| t.inline_completion.as_ref())
            .is_some();
        // A client that renders inline completions gets no completion items as well, so the
        // same proposal is never shown twice.
        let completion_provider = (!inline).then(|| CompletionOptions {
            resolve_provider: Some(false),
            trigger_characters: Some(
                [".", "(", "[", ",", ":", "="]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            ),
            ..CompletionOptions::default()
        });
        Ok(InitializeResult {
            capabilities: ServerCapabilities {
                text_document_sync: Some(TextDocumentSyncCapability::Options(
                    TextDocumentSyncOptions {
                        open_close: Some(true),
                        change: Some(TextDocumentSyncKind::INCREMENTAL),
                        ..TextDocumentSyncOptions::default()
                    },
                )),
                completion_provider,
                inline_completion_provider: Some(OneOf::Left(true)),
                execute_command_provider: Some(ExecuteCommandOptions {
                    commands: vec![ACCEPTED_COMMAND.into(), DISMISSED_COMMAND.into()],
                    ..ExecuteCommandOptions::default()
                }),
                ..ServerCapabilities::default()
            },
            server_info: Some(ServerInfo {
                name: "souffleur-lsp".into(),
                version: Some(env!("CARGO_PKG_VERSION").into()),
            }),
            ..InitializeResult::default()
        })
    }

    async fn initialized(&self, _: InitializedParams) {
        // Check the server once, so a server that is down is told before the first
        // keystroke; never blocks the client. The short wait lets a client that sends its
        // settings right after `initialized` configure the URL first.
        let shared = self.shared.clone();
        let client = self.client.clone();
        tokio::spawn(async move {
            tokio::time::sleep(HEALTH_CHECK_DELAY).await;
            let api = SouffleurClient::new(&shared.config());
            match api.health().await {
                Ok(health) => {
                    shared.succeeded();
                    let model = health.get("model").map_or(Value::Null, Value::clone);
                    client
                        .log_message(
                            MessageType::INFO,
                            format!("souffleur: connected to {} (model {model})", api.url()),
                        )
                        .await;
                }
                Err(error) => shared.report(&client, &error).await,
            }
        });
    }

    async fn shutdown(&self) -> Result<()> {
        Ok(())
    }

    async fn did_open(&self, params: DidOpenTextDocumentParams) {
        let item = params.text_document;
        let path = item.uri.to_file_path().map(|p| p.into_owned());
        let filepath = path.as_ref().map_or_else(
            || item.uri.as_str().to_string(),
            |p| p.display().to_string(),
        );
        let mut doc = Document::new(item.text, item.language_id, item.version, filepath);
        doc.git_url = path.as_deref().and_then(git::origin_url);
        lock(&self.shared.documents).open(item.uri, doc);
    }

    async fn did_change(&self, params: DidChangeTextDocumentParams) {
        lock(&self.shared.documents).change(
            &params.text_document.uri,
            params.text_document.version,
            &params.content_changes,
        );
        // Whatever was being computed is for a text that no longer exists.
        self.shared.debouncer.ticket();
    }

    async fn did_close(&self, params: DidCloseTextDocumentParams) {
        lock(&self.shared.documents).close(&params.text_document.uri);
        let mut last = lock(&self.shared.last);
        if last
            .as_ref()
            .is_some_and(|l| l.uri == params.text_document.uri)
        {
            *last = None;
        }
    }

    async fn did_change_configuration(&self, params: DidChangeConfigurationParams) {
        let changed = {
            let mut config = self
                .shared
                .config
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let before = (config.url.clone(), config.token.clone());
            config.apply_settings(&params.settings);
            before != (config.url.clone(), config.token.clone())
        };
        if changed {
            self.shared.succeeded();
            *lock(&self.shared.last) = None;
        }
    }

    async fn execute_command(&self, params: ExecuteCommandParams) -> Result<Option<LSPAny>> {
        let Some(kind) = telemetry::command_kind(&params.command) else {
            return Err(Error::invalid_params(format!(
                "unknown command `{}`",
                params.command
            )));
        };
        let Some(event) = telemetry::command_params(&params.arguments) else {
            return Err(Error::invalid_params(
                "expected [{\"completion_id\": \"cmpl-...\", \"choice_index\": 0}]",
            ));
        };
        self.send_event(kind, event);
        Ok(None)
    }

    async fn completion(&self, params: CompletionParams) -> Result<Option<CompletionResponse>> {
        let position = params.text_document_position;
        let items = self
            .ghost(position.text_document.uri, position.position, false)
            .await
            .map(|g| vec![completion_item(&g)])
            .unwrap_or_default();
        Ok(Some(CompletionResponse::List(CompletionList {
            is_incomplete: true,
            items,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_and_suffix_are_cut_at_lines() {
        let text = "aaaa\nbbbb\ncccc";
        assert_eq!(tail_at_line(text, 100), text);
        assert_eq!(tail_at_line(text, 7), "cccc");
        assert_eq!(tail_at_line("xxxxxxxxxx", 3), "xxx");
        assert_eq!(head_at_line(text, 7), "aaaa\n");
        assert_eq!(head_at_line("é€😀", 4), "é", "never inside a character");
        assert_eq!(tail_at_line("😀é€", 4), "€");
    }

    #[test]
    fn completion_items_replace_the_typed_word() {
        let doc = Document::new("x = comp".into(), "python".into(), 1, "/a.py".into());
        let mut ghost = ghost_at(&doc, Position::new(0, 99));
        ghost.text = "ute(a)\nmore".into();
        ghost.completion_id = "cmpl-9".into();
        assert_eq!(ghost.position, Position::new(0, 8));
        let item = completion_item(&ghost);
        assert_eq!(item.label, "compute(a)…");
        assert_eq!(item.insert_text.as_deref(), Some("compute(a)\nmore"));
        let Some(CompletionTextEdit::Edit(edit)) = item.text_edit else {
            panic!("text edit expected");
        };
        assert_eq!(
            edit.range,
            Range::new(Position::new(0, 4), Position::new(0, 8))
        );
        let args = item.command.and_then(|c| c.arguments).unwrap_or_default();
        assert_eq!(args[0]["completion_id"], "cmpl-9");
    }
}
