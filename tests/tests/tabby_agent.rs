//! Tabby's own agent, npm `tabby-agent@1.5.0` (pinned in `tests/tabby-agent/`, installed
//! by scripts/test.sh with `npm ci`), as a client of the real `souffleur serve`: in LSP
//! mode (`--lsp --stdio`, what LSP editors start) and in its JSON-lines mode (`--stdio`,
//! what Tabby's Vim and IntelliJ plugins start). The agent's `HOME` holds the
//! `~/.tabby-client/agent/config.toml` that lsp/README.md documents; a recording proxy
//! between agent and server shows what the agent asked for.
//!
//! Skipped (with a line on stderr) only when Node.js/npm is missing; with npm present and
//! the agent not installed, the test fails and says how to install it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use e2e::server;
use serde_json::{Value, json};

/// The file completed in both modes; the cursor is at its end (inside `print(`).
const SOURCE: &str = "\
def fibonacci(n):
    \"\"\"Return the n-th Fibonacci number.\"\"\"
    if n < 2:
        return n
    return fibonacci(n - 1) + fibonacci(n - 2)


def print_first_fibonacci_numbers(count):
    for i in range(count):
        print(";

/// How long the agent may take for one answer (a completion on a debug build included).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// The agent's entry point, or `None` (test skipped) when Node.js/npm is missing.
fn agent_script() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tabby-agent/node_modules/tabby-agent/dist/cli.js");
    let have = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !have("npm") || !have("node") {
        eprintln!("tabby_agent: skipped, Node.js/npm is not installed");
        return None;
    }
    assert!(
        script.is_file(),
        "{} is missing: run scripts/test.sh (or `npm ci --prefix tests/tabby-agent`)",
        script.display()
    );
    Some(script)
}

/// A loopback proxy in front of the server that keeps every byte clients send.
struct Recorder {
    url: String,
    sent: Arc<Mutex<Vec<u8>>>,
}

impl Recorder {
    fn start(upstream: &str) -> Self {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&sent);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let log = Arc::clone(&log);
                let (Ok(mut client_in), Ok(mut server_in)) =
                    (client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                let (mut client_out, mut server_out) = (client, server);
                std::thread::spawn(move || {
                    let mut buffer = [0u8; 16 << 10];
                    while let Ok(n) = client_in.read(&mut buffer) {
                        if n == 0 || server_out.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                        if let Ok(mut log) = log.lock() {
                            log.extend_from_slice(&buffer[..n]);
                        }
                    }
                    let _ = server_out.shutdown(Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut server_in, &mut client_out);
                    let _ = client_out.shutdown(Shutdown::Write);
                });
            }
        });
        Self { url, sent }
    }

    /// Everything clients sent so far, lower-cased (HTTP header names have no case).
    fn sent_lowercase(&self) -> String {
        let sent = self.sent.lock().expect("proxy log").clone();
        String::from_utf8_lossy(&sent).to_lowercase()
    }
}

/// A `HOME` whose agent config points at `endpoint` with `token`, usage tracking off.
fn agent_home(endpoint: &str, token: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("agent home");
    let dir = home.path().join(".tabby-client/agent");
    std::fs::create_dir_all(&dir).expect("agent config dir");
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "[server]\nendpoint = \"{endpoint}\"\ntoken = \"{token}\"\n\n\
             [anonymousUsageTracking]\ndisable = true\n"
        ),
    )
    .expect("agent config");
    home
}

/// `node cli.js args…` with `home` as HOME and no proxy settings, stdio piped.
fn spawn_agent(script: &Path, args: &[&str], home: &Path) -> Child {
    let mut command = Command::new("node");
    command
        .arg(script)
        .args(args)
        .env("HOME", home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for proxy in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "NODE_OPTIONS",
    ] {
        command.env_remove(proxy);
    }
    command.spawn().expect("start tabby-agent")
}

/// Kills the agent when a test ends, whatever happened.
struct Agent {
    child: Child,
    stdin: ChildStdin,
    incoming: Receiver<Value>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    /// Starts the agent; `read` turns its stdout into messages.
    fn start(
        script: &Path,
        args: &[&str],
        home: &Path,
        read: fn(&mut dyn BufRead) -> Option<Value>,
    ) -> Self {
        let mut child = spawn_agent(script, args, home);
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, incoming) = channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            while let Some(message) = read(&mut reader) {
                if tx.send(message).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            incoming,
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        self.stdin.write_all(bytes).expect("write to tabby-agent");
        self.stdin.flush().expect("flush");
    }

    /// The next message the agent writes; fails the test after `deadline`.
    fn next_message(&mut self, what: &str, deadline: Instant) -> Value {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.incoming.recv_timeout(left) {
            Ok(message) => message,
            Err(RecvTimeoutError::Timeout) => {
                panic!("tabby-agent: no answer to {what} in {ANSWER_TIMEOUT:?}")
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!("tabby-agent closed stdout before answering {what}")
            }
        }
    }
}

fn read_lsp_message(reader: &mut dyn BufRead) -> Option<Value> {
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

fn read_json_line(reader: &mut dyn BufRead) -> Option<Value> {
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Ok(value) = serde_json::from_str(&line) {
            return Some(value);
        }
    }
}

impl Agent {
    fn lsp_send(&mut self, message: &Value) {
        let body = serde_json::to_vec(message).expect("json");
        let mut frame = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
        frame.extend_from_slice(&body);
        self.write(&frame);
    }

    /// Sends an LSP request and returns its `result`, answering the agent's own requests.
    fn lsp_request(&mut self, id: i64, method: &str, params: Value) -> Value {
        self.lsp_send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let message = self.next_message(method, deadline);
            if message.get("method").is_some() {
                if let Some(their_id) = message.get("id") {
                    self.lsp_send(&json!({"jsonrpc": "2.0", "id": their_id, "result": null}));
                }
                continue;
            }
            if message["id"] == json!(id) {
                assert!(message.get("error").is_none(), "{method}: {message}");
                return message["result"].clone();
            }
        }
    }

    /// Sends a JSON-lines request `[id, {"func", "args"}]`; returns the answer's payload
    /// (events, `[0, {...}]`, are skipped).
    fn line_request(&mut self, id: i64, func: &str, args: Value) -> Value {
        let mut line =
            serde_json::to_vec(&json!([id, {"func": func, "args": args}])).expect("json");
        line.push(b'\n');
        self.write(&line);
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let message = self.next_message(func, deadline);
            if message[0] == json!(id) {
                return message[1].clone();
            }
        }
    }
}

/// The agent's token (the server is not `--local`), created once for both tests.
fn agent_token() -> String {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN
        .get_or_init(|| {
            let out = e2e::souffleur(
                &server().home,
                &["token", "create", "--name", "tabby-agent"],
            );
            let token = out.lines().last().expect("token line").trim().to_string();
            // The server reloads tokens every second.
            let deadline = Instant::now() + Duration::from_secs(10);
            while e2e::get("/v1beta/models", Some(&token)).status != 200 {
                assert!(
                    Instant::now() < deadline,
                    "the server never accepted the new token"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            token
        })
        .clone()
}

/// What the agent stored about the server's settings (`data.json`), once it is there.
fn stored_server_config(home: &Path, endpoint: &str) -> Value {
    let path = home.join(".tabby-client/agent/data.json");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let data: Value = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or(Value::Null);
        let config = &data["serverConfig"][endpoint];
        if !config.is_null() || Instant::now() > deadline {
            return config.clone();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn tabby_agent_in_lsp_mode_completes_with_souffleur_and_turns_its_telemetry_off() {
    let Some(script) = agent_script() else {
        return;
    };
    let token = agent_token();
    let proxy = Recorder::start(&server().url);
    let home = agent_home(&proxy.url, &token);
    let source_dir = tempfile::tempdir().expect("source dir");
    let path = source_dir.path().join("fib.py");
    std::fs::write(&path, SOURCE).expect("source file");
    let uri = format!("file://{}", path.display());

    let mut agent = Agent::start(
        &script,
        &["--lsp", "--stdio"],
        home.path(),
        read_lsp_message,
    );
    let started = Instant::now();
    let result = agent.lsp_request(
        1,
        "initialize",
        json!({"processId": null, "rootUri": null, "capabilities": {},
               "clientInfo": {"name": "souffleur-e2e", "version": "1"}}),
    );
    assert_eq!(
        result["serverInfo"],
        json!({"name": "tabby-agent", "version": "1.5.0"})
    );
    let initialize_time = started.elapsed();
    agent.lsp_send(&json!({"jsonrpc": "2.0", "method": "initialized", "params": {}}));
    agent.lsp_send(
        &json!({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {
        "textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": SOURCE}}}),
    );
    let last = SOURCE.lines().count() - 1;
    let column = SOURCE.lines().last().expect("last line").len();
    let result = agent.lsp_request(
        2,
        "textDocument/completion",
        json!({"textDocument": {"uri": uri}, "position": {"line": last, "character": column}}),
    );
    let items = result["items"].as_array().cloned().unwrap_or_default();
    assert!(!items.is_empty(), "no completion item: {result}");
    let text = items[0]["textEdit"]["newText"].as_str().unwrap_or_default();
    assert!(!text.trim().is_empty(), "empty completion: {result}");
    let id = items[0]["data"]["completionId"]
        .as_str()
        .unwrap_or_default();
    assert!(
        id.starts_with("cmpl-"),
        "not Souffleur's completion id: {result}"
    );

    // The agent asked for the server's settings and stored "no client-side telemetry".
    assert_eq!(
        stored_server_config(home.path(), &proxy.url),
        json!({"anonymousUsageTracking": {"disable": true}})
    );
    let sent = proxy.sent_lowercase();
    for request in [
        "get /v1/health http/1.1",
        "get /v1beta/server_setting http/1.1",
        "post /v1/completions http/1.1",
    ] {
        assert!(
            sent.contains(request),
            "agent never sent `{request}`:\n{sent}"
        );
    }
    let bearer = format!("authorization: bearer {}", token.to_lowercase());
    assert!(
        sent.contains(&bearer),
        "the agent's requests carry no token:\n{sent}"
    );

    let result = agent.lsp_request(3, "shutdown", Value::Null);
    assert_eq!(result, Value::Null);
    agent.lsp_send(&json!({"jsonrpc": "2.0", "method": "exit"}));
    eprintln!("tabby_agent (LSP): initialize answered in {initialize_time:?}, completion {text:?}");
}

#[test]
fn tabby_agent_in_json_lines_mode_completes_with_souffleur() {
    let Some(script) = agent_script() else {
        return;
    };
    let token = agent_token();
    let proxy = Recorder::start(&server().url);
    let home = agent_home(&proxy.url, &token);
    let mut agent = Agent::start(&script, &["--stdio"], home.path(), read_json_line);
    let initialized = agent.line_request(
        1,
        "initialize",
        json!([{"clientProperties": {"session": {"client": "souffleur-e2e"}}}]),
    );
    assert_eq!(initialized, json!(true));
    let status = agent.line_request(2, "getStatus", json!([]));
    assert_eq!(status, json!("ready"), "agent not connected");
    let response = agent.line_request(
        3,
        "provideCompletions",
        json!([{"filepath": "/work/fib.py", "language": "python", "text": SOURCE,
                "position": SOURCE.len(), "manually": true, "workspace": "/work",
                "git": {"root": "/work", "remotes": [
                    {"name": "origin", "url": "https://example.invalid/fib.git"}]}}]),
    );
    let text = response["choices"][0]["text"].as_str().unwrap_or_default();
    assert!(!text.trim().is_empty(), "empty completion: {response}");
    let id = response["id"].as_str().unwrap_or_default();
    assert!(
        id.starts_with("cmpl-"),
        "not Souffleur's completion id: {response}"
    );
    // What a Vim/IntelliJ plugin adds reaches the server as Tabby's `filepath`/`git_url`.
    let sent = proxy.sent_lowercase();
    for field in [
        r#""filepath":"fib.py""#,
        r#""git_url":"https://example.invalid/fib.git""#,
    ] {
        assert!(sent.contains(field), "{field} not sent:\n{sent}");
    }
}
