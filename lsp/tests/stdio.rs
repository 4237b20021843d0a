//! `souffleur-lsp` driven over stdio by a minimal LSP client, against the real Souffleur
//! server (default model), a server that is down, and a fake server that never answers.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use common::{LspClient, completion_items, inline_texts};
use serde_json::{Value, json};

fn write_file(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write source file");
    path
}

fn position(line: u32, character: u32) -> Value {
    json!({"line": line, "character": character})
}

fn completion_params(uri: &str, line: u32, character: u32) -> Value {
    json!({"textDocument": {"uri": uri}, "position": position(line, character)})
}

fn inline_params(uri: &str, line: u32, character: u32, trigger: u32) -> Value {
    json!({"textDocument": {"uri": uri}, "position": position(line, character),
           "context": {"triggerKind": trigger}})
}

fn metric(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn completes_a_real_file_with_the_real_server() {
    let server = e2e::local_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_file(dir.path(), "fib.py", common::FIBONACCI);
    let mut lsp = LspClient::start(&[]);
    let capabilities = lsp.initialize(json!({"url": server.url, "debounceMs": 10, "trace": true}));
    assert_eq!(capabilities["textDocumentSync"]["change"], 2, "incremental");
    assert_eq!(capabilities["inlineCompletionProvider"], true);
    assert!(
        capabilities["completionProvider"].is_object(),
        "a client without inline completion gets completion items: {capabilities}"
    );
    let uri = lsp.open(&path, "python");

    // Cursor after `print(` on line 9.
    let result = lsp.request("textDocument/completion", completion_params(&uri, 9, 14));
    let items = completion_items(&result);
    assert_eq!(items.len(), 1, "{result}");
    let item = &items[0];
    let ghost = item["textEdit"]["newText"]
        .as_str()
        .expect("textEdit.newText")
        .to_string();
    assert!(!ghost.trim().is_empty(), "empty completion: {result}");
    assert_eq!(item["insertText"], ghost.as_str());
    assert_eq!(
        item["textEdit"]["range"],
        json!({"start": position(9, 14), "end": position(9, 14)})
    );
    let completion_id = item["command"]["arguments"][0]["completion_id"]
        .as_str()
        .expect("completion id")
        .to_string();
    assert!(completion_id.starts_with("cmpl-"), "{completion_id}");

    // The same text is what the server answers to the same request sent directly.
    let (prefix, suffix) = common::FIBONACCI.split_at(common::FIBONACCI.len() - 1);
    let direct = e2e::post_json(
        &format!("{}/v1/completions", server.url),
        &json!({"language": "python", "segments": {"prefix": prefix, "suffix": suffix,
                "filepath": path.display().to_string()}}),
    );
    assert_eq!(direct["choices"][0]["text"], ghost.as_str(), "{direct}");

    // Inline completion at the same place: the same ghost text, with a range at the cursor.
    let result = lsp.request(
        "textDocument/inlineCompletion",
        inline_params(&uri, 9, 14, 2),
    );
    assert_eq!(
        inline_texts(&result),
        std::slice::from_ref(&ghost),
        "{result}"
    );
    assert_eq!(
        result["items"][0]["range"],
        json!({"start": position(9, 14), "end": position(9, 14)})
    );

    // Typing the first character of the ghost text: the rest, without an HTTP call.
    let first = ghost.chars().next().expect("non-empty");
    if ghost.chars().count() > 1 && first != '\n' {
        lsp.insert(&uri, 2, 9, 14, &first.to_string());
        let column = 14 + first.len_utf16() as u32;
        let result = lsp.request(
            "textDocument/inlineCompletion",
            inline_params(&uri, 9, column, 2),
        );
        assert_eq!(
            inline_texts(&result),
            [ghost[first.len_utf8()..].to_string()],
            "{result}"
        );
        lsp.drain(Duration::from_millis(100));
        let last_trace = lsp
            .notifications_named("window/logMessage")
            .into_iter()
            .filter_map(|n| n["params"]["message"].as_str())
            .rfind(|m| {
                m.starts_with(&format!(
                    "souffleur-lsp completion: line=9 character={column} "
                ))
            })
            .expect("trace message")
            .to_string();
        assert!(last_trace.contains("reused=true"), "{last_trace}");
    }

    // Acceptance reaches the server's event counters.
    let metrics_url = format!("{}/metrics", server.url);
    let before = metric(
        &e2e::get_text(&metrics_url),
        "souffleur_completion_events_total{type=\"select\"}",
    );
    lsp.notify(
        "souffleur/accepted",
        json!({"completion_id": completion_id, "choice_index": 0}),
    );
    let result = lsp.request(
        "workspace/executeCommand",
        json!({"command": "souffleur.accepted", "arguments": [{"completion_id": completion_id}]}),
    );
    assert_eq!(result, Value::Null);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = e2e::get_text(&metrics_url);
        if metric(
            &metrics,
            "souffleur_completion_events_total{type=\"select\"}",
        ) >= before + 2
        {
            assert!(metric(&metrics, "souffleur_completion_events_total{type=\"view\"}") >= 1);
            break;
        }
        assert!(Instant::now() < deadline, "events not counted:\n{metrics}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        lsp.notifications_named("window/showMessage").is_empty(),
        "no warnings while the server is up: {:?}",
        lsp.notifications
    );
    assert!(lsp.shutdown().success());
}

#[test]
fn a_down_server_is_reported_once_and_completions_are_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_file(dir.path(), "fib.py", common::FIBONACCI);
    let mut lsp = LspClient::start(&[]);
    lsp.initialize(json!({"url": e2e::closed_port_url(), "debounceMs": 0}));
    let uri = lsp.open(&path, "python");
    for round in 0..3u32 {
        lsp.insert(&uri, i64::from(round) + 2, 9, 14, "x");
        let column = 15 + round;
        let result = lsp.request(
            "textDocument/completion",
            completion_params(&uri, 9, column),
        );
        assert_eq!(completion_items(&result), Vec::<Value>::new(), "{result}");
        let result = lsp.request(
            "textDocument/inlineCompletion",
            inline_params(&uri, 9, column, 1),
        );
        assert_eq!(inline_texts(&result), Vec::<String>::new(), "{result}");
    }
    lsp.drain(Duration::from_millis(300));
    let shown = lsp.notifications_named("window/showMessage");
    assert_eq!(shown.len(), 1, "{:?}", lsp.notifications);
    let message = shown[0]["params"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("cannot reach"), "{message}");
    assert!(lsp.shutdown().success());
}

#[test]
fn a_client_with_inline_completion_gets_no_completion_items() {
    let mut lsp = LspClient::start(&[]);
    let capabilities = lsp.initialize_with(
        json!({"textDocument": {"inlineCompletion": {"dynamicRegistration": false}}}),
        json!({"url": e2e::closed_port_url()}),
    );
    assert_eq!(capabilities["inlineCompletionProvider"], true);
    assert!(
        capabilities.get("completionProvider").is_none(),
        "{capabilities}"
    );
    assert!(lsp.shutdown().success());
}

/// What the fake server saw: a connection's request arrived, or it was closed.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Request(usize),
    Closed(usize),
}

/// A server that reads each request and never answers; reports what it sees.
fn silent_server() -> (String, Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
                let mut reader = BufReader::new(stream);
                let mut length = 0;
                let mut is_get = false;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    is_get |= line.starts_with("GET ");
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                // The health check at `initialized` (a GET) is not a completion.
                if reader.read_exact(&mut body).is_err() || is_get {
                    return;
                }
                let _ = tx.send(Seen::Request(n));
                let mut rest = [0u8; 64];
                // Blocks until the client closes the connection.
                while matches!(reader.read(&mut rest), Ok(k) if k > 0) {}
                let _ = tx.send(Seen::Closed(n));
            });
        }
    });
    (url, rx)
}

#[test]
fn cancelled_and_superseded_requests_drop_their_http_call() {
    let (url, seen) = silent_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_file(dir.path(), "fib.py", common::FIBONACCI);
    let mut lsp = LspClient::start(&[]);
    lsp.initialize(json!({"url": url, "debounceMs": 0}));
    let uri = lsp.open(&path, "python");
    let wait = |what: Seen| {
        let got = seen
            .recv_timeout(Duration::from_secs(10))
            .expect("fake server event");
        assert_eq!(got, what);
    };
    // `$/cancelRequest` while the server is "generating".
    let id = lsp.send_request(
        "textDocument/inlineCompletion",
        inline_params(&uri, 9, 14, 1),
    );
    let Seen::Request(first) = seen
        .recv_timeout(Duration::from_secs(10))
        .expect("request reached the server")
    else {
        panic!("expected a request");
    };
    lsp.notify("$/cancelRequest", json!({"id": id}));
    let response = lsp.wait_response(id, Duration::from_secs(10));
    assert_eq!(response["error"]["code"], -32800, "{response}");
    wait(Seen::Closed(first));

    // A newer request supersedes one in flight: the older answers empty at once.
    let older = lsp.send_request(
        "textDocument/inlineCompletion",
        inline_params(&uri, 9, 14, 1),
    );
    let Seen::Request(second) = seen.recv_timeout(Duration::from_secs(10)).expect("request") else {
        panic!("expected a request");
    };
    let newer = lsp.send_request(
        "textDocument/inlineCompletion",
        inline_params(&uri, 9, 14, 1),
    );
    let response = lsp.wait_response(older, Duration::from_secs(10));
    assert_eq!(inline_texts(&response["result"]), Vec::<String>::new());
    let mut events = [
        seen.recv_timeout(Duration::from_secs(10)).expect("event"),
        seen.recv_timeout(Duration::from_secs(10)).expect("event"),
    ];
    events.sort_by_key(|e| matches!(e, Seen::Request(_)));
    assert_eq!(events[0], Seen::Closed(second));
    assert!(matches!(events[1], Seen::Request(_)));
    lsp.notify("$/cancelRequest", json!({"id": newer}));
    let response = lsp.wait_response(newer, Duration::from_secs(10));
    assert_eq!(response["error"]["code"], -32800, "{response}");
    assert!(lsp.shutdown().success());
}

#[test]
fn hostile_input_gets_answers_not_crashes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_file(dir.path(), "fib.py", common::FIBONACCI);
    let mut lsp = LspClient::start(&[]);
    lsp.initialize(json!({"url": e2e::closed_port_url(), "debounceMs": 0, "token": 5}));
    let uri = lsp.open(&path, "python");
    // Not JSON at all.
    lsp.send_raw(b"Content-Length: 5\r\n\r\nhello");
    lsp.send_raw(b"Content-Length: 13\r\n\r\n{\"jsonrpc\":1}");
    // Edits and positions far outside the document, on unknown documents, reversed.
    lsp.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 2}, "contentChanges": [
            {"range": {"start": position(900, 900), "end": position(1, 3)}, "text": "😀"},
            {"range": {"start": position(0, 1), "end": position(0, 1)}, "text": "\r\n\r"},
        ]}),
    );
    lsp.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": "file:///nope.py", "version": 2}, "contentChanges": [{"text": "x"}]}),
    );
    for (line, character) in [(0, 0), (2, 1), (u32::MAX, u32::MAX), (9, 500)] {
        let result = lsp.request(
            "textDocument/completion",
            completion_params(&uri, line, character),
        );
        assert_eq!(completion_items(&result), Vec::<Value>::new());
    }
    let result = lsp.request(
        "textDocument/inlineCompletion",
        inline_params("untitled:Untitled-1", 0, 0, 1),
    );
    assert_eq!(inline_texts(&result), Vec::<String>::new());
    // Bad params are errors, not crashes.
    let id = lsp.send_request("textDocument/inlineCompletion", json!({"bogus": true}));
    let response = lsp.wait_response(id, Duration::from_secs(10));
    assert!(response.get("error").is_some(), "{response}");
    let id = lsp.send_request(
        "workspace/executeCommand",
        json!({"command": "souffleur.accepted", "arguments": [42]}),
    );
    let response = lsp.wait_response(id, Duration::from_secs(10));
    assert!(response.get("error").is_some(), "{response}");
    lsp.notify("souffleur/accepted", json!({"nothing": "here"}));
    lsp.notify(
        "workspace/didChangeConfiguration",
        json!({"settings": {"souffleur": {"url": "ftp://nowhere", "debounceMs": -3}}}),
    );
    let result = lsp.request("textDocument/completion", completion_params(&uri, 1, 1));
    assert_eq!(completion_items(&result), Vec::<Value>::new());
    lsp.notify(
        "workspace/didChangeConfiguration",
        json!({"settings": null}),
    );
    lsp.drain(Duration::from_millis(200));
    let shown = lsp.notifications_named("window/showMessage");
    assert!(
        shown.len() <= 2,
        "one message for the down server, one for the bad URL: {shown:?}"
    );
    assert!(lsp.shutdown().success());
}

/// Emacs lsp-mode sends `shutdown` with `"params": {}`; tower-lsp-server alone answers
/// -32602 "Unexpected params" and lsp-mode reports a timeout. The exact frames, as bytes.
#[test]
fn shutdown_and_exit_with_empty_params_as_emacs_lsp_mode_sends_them() {
    let mut lsp = LspClient::start(&[]);
    lsp.initialize(json!({"url": e2e::closed_port_url()}));
    let shutdown = br#"{"jsonrpc":"2.0","id":41,"method":"shutdown","params":{}}"#;
    let mut frame = format!("Content-Length: {}\r\n\r\n", shutdown.len()).into_bytes();
    frame.extend_from_slice(shutdown);
    lsp.send_raw(&frame);
    let response = lsp.wait_response(41, Duration::from_secs(10));
    assert_eq!(
        response,
        json!({"jsonrpc": "2.0", "id": 41, "result": null}),
        "{response}"
    );
    let exit = br#"{"jsonrpc":"2.0","method":"exit","params":{}}"#;
    let mut frame = format!("Content-Length: {}\r\n\r\n", exit.len()).into_bytes();
    frame.extend_from_slice(exit);
    lsp.send_raw(&frame);
    let status = lsp.wait_exit();
    assert!(status.success(), "{status}");
}
