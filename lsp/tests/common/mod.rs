//! Shared by the integration tests: a minimal LSP client that drives `souffleur-lsp`
//! over stdio with `Content-Length` framing, and the source file the tests complete
//! in. The Souffleur server they talk to (`--local` on a free loopback port, the tiny
//! model, temporary home) comes from the `e2e` crate's harness: `e2e::local_server()`.

#![allow(dead_code, missing_docs)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The built `souffleur-lsp` binary of this package.
pub fn lsp_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_souffleur-lsp"))
}

/// `file://` URI of a path.
pub fn file_uri(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// A minimal LSP client over the child's stdio.
pub struct LspClient {
    child: Child,
    stdin: ChildStdin,
    incoming: Receiver<Value>,
    next_id: i64,
    /// Notifications received so far (in order).
    pub notifications: Vec<Value>,
}

fn read_message(reader: &mut impl BufRead) -> Option<Value> {
    let mut length = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let mut body = vec![0; length?];
    reader.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}

impl LspClient {
    /// Starts `souffleur-lsp` with `env` added to its environment.
    pub fn start(env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(lsp_binary());
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env_remove("SOUFFLEUR_URL")
            .env_remove("SOUFFLEUR_TOKEN");
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start souffleur-lsp");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, incoming) = channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            while let Some(message) = read_message(&mut reader) {
                if tx.send(message).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            incoming,
            next_id: 0,
            notifications: Vec::new(),
        }
    }

    /// Sends one framed message.
    pub fn send(&mut self, message: &Value) {
        let body = serde_json::to_vec(message).expect("json");
        write!(self.stdin, "Content-Length: {}\r\n\r\n", body.len()).expect("write header");
        self.stdin.write_all(&body).expect("write body");
        self.stdin.flush().expect("flush");
    }

    /// Writes bytes as they are (to send malformed frames).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stdin.write_all(bytes).expect("write");
        self.stdin.flush().expect("flush");
    }

    /// Sends a notification.
    pub fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    /// Sends a request; returns its id.
    pub fn send_request(&mut self, method: &str, params: Value) -> i64 {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        id
    }

    /// Waits for the response to request `id` (the whole response object), keeping the
    /// notifications that arrive meanwhile and answering the server's own requests.
    pub fn wait_response(&mut self, id: i64, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = match self.incoming.recv_timeout(left) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => panic!("no response to request {id}"),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("souffleur-lsp closed stdout before answering request {id}")
                }
            };
            if message.get("method").is_some() {
                if let Some(server_id) = message.get("id") {
                    let reply = json!({"jsonrpc": "2.0", "id": server_id, "result": null});
                    self.send(&reply);
                } else {
                    self.notifications.push(message);
                }
                continue;
            }
            if message["id"] == json!(id) {
                return message;
            }
        }
    }

    /// Sends a request and returns its `result` (panics on an error response).
    pub fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.send_request(method, params);
        let response = self.wait_response(id, Duration::from_secs(120));
        assert!(
            response.get("error").is_none(),
            "{method} failed: {response}"
        );
        response["result"].clone()
    }

    /// Collects notifications for `duration`.
    pub fn drain(&mut self, duration: Duration) {
        let deadline = Instant::now() + duration;
        while let Ok(message) = self
            .incoming
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if message.get("method").is_some() && message.get("id").is_none() {
                self.notifications.push(message);
            }
        }
    }

    /// Notifications with `method` received so far.
    pub fn notifications_named(&self, method: &str) -> Vec<&Value> {
        self.notifications
            .iter()
            .filter(|n| n["method"] == method)
            .collect()
    }

    /// `initialize` with the smallest capabilities a client can send (as JetBrains'
    /// LSP4IJ might), then `initialized`. Returns the server's capabilities.
    pub fn initialize(&mut self, options: Value) -> Value {
        self.initialize_with(json!({}), options)
    }

    /// `initialize` with the given client capabilities, then `initialized`.
    pub fn initialize_with(&mut self, capabilities: Value, options: Value) -> Value {
        let result = self.request(
            "initialize",
            json!({
                "processId": std::process::id(),
                "rootUri": null,
                "capabilities": capabilities,
                "initializationOptions": options,
            }),
        );
        self.notify("initialized", json!({}));
        result["capabilities"].clone()
    }

    /// `didOpen` of a file on disk; returns its URI.
    pub fn open(&mut self, path: &Path, language: &str) -> String {
        let uri = file_uri(path);
        let text = std::fs::read_to_string(path).expect("read file");
        self.notify(
            "textDocument/didOpen",
            json!({"textDocument": {"uri": uri, "languageId": language, "version": 1, "text": text}}),
        );
        uri
    }

    /// `didChange` inserting `text` at (line, character).
    pub fn insert(&mut self, uri: &str, version: i64, line: u32, character: u32, text: &str) {
        let at = json!({"line": line, "character": character});
        self.notify(
            "textDocument/didChange",
            json!({
                "textDocument": {"uri": uri, "version": version},
                "contentChanges": [{"range": {"start": at, "end": at}, "text": text}],
            }),
        );
    }

    /// `shutdown` then `exit`; the exit status of the server.
    pub fn shutdown(mut self) -> std::process::ExitStatus {
        self.request("shutdown", Value::Null);
        self.notify("exit", Value::Null);
        self.wait_exit()
    }

    /// Waits (10 s at most) for the server to exit; its exit status.
    pub fn wait_exit(mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "souffleur-lsp did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LspClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of the inline completion items in a result.
pub fn inline_texts(result: &Value) -> Vec<String> {
    let items = result.get("items").unwrap_or(result);
    items
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["insertText"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The completion items of a `textDocument/completion` result.
pub fn completion_items(result: &Value) -> Vec<Value> {
    let items = result.get("items").unwrap_or(result);
    items.as_array().cloned().unwrap_or_default()
}

/// A Python source file the tests complete in (a real file on disk).
pub const FIBONACCI: &str = "\
def fibonacci(n):
    \"\"\"Return the n-th Fibonacci number.\"\"\"
    if n < 2:
        return n
    return fibonacci(n - 1) + fibonacci(n - 2)


def print_first_fibonacci_numbers(count):
    for i in range(count):
        print(
";
