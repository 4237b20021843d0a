//! Remote backends end to end: Souffleur in front of two real llama.cpp servers
//! (`llama-server`, built from source by `scripts/setup_llama_server.sh`) serving
//! Qwen2.5-Coder-0.5B.
//!
//! - Tabby-shape completions through `llama.cpp-infill` (llama.cpp renders the FIM
//!   prompt) and `openai-completions` (Souffleur renders it into `prompt`).
//! - One replica killed mid-run: no client request fails (a request that cannot
//!   connect goes to the other replica), the ejection shows in `/metrics` and
//!   `/v1/health`, and the replica is re-admitted after a restart.
//! - A newer keystroke cancels the older request, and the upstream stops generating
//!   it (llama.cpp's slot is idle again long before the request would have ended).
//! - `openai-chat` on llama.cpp's `/v1/chat/completions`: whole and streamed chat, a
//!   JSON Schema answer, a review, budgets in the model's tokens, the audit rows, and a
//!   client leaving a stream stopping the upstream.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{Launched, default_model, launch, request, temp_home, workspace_root};
use serde_json::{Value, json};

/// The llama.cpp server binary (`SOUFFLEUR_LLAMA_SERVER`, else `.llama-server/bin`).
fn llama_server_binary() -> PathBuf {
    let path = std::env::var_os("SOUFFLEUR_LLAMA_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".llama-server/bin/llama-server"));
    assert!(
        path.is_file(),
        "llama-server missing at {}: run `bash scripts/setup_llama_server.sh` (scripts/test.sh does)",
        path.display()
    );
    path
}

fn coder_model() -> PathBuf {
    let path = default_model().with_file_name("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf");
    assert!(
        path.is_file(),
        "{} missing: run `souffleur model fetch-default`",
        path.display()
    );
    path
}

/// A running llama.cpp server (killed when dropped).
struct Upstream {
    port: u16,
    child: Child,
}

impl Upstream {
    fn start(port: u16) -> Self {
        let child = Command::new(llama_server_binary())
            .args(["-m"])
            .arg(coder_model())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["-c", "4096", "-np", "2", "-t", "1", "--slots"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start llama-server");
        let up = Self { port, child };
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if health_ok(port) {
                return up;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("llama-server on port {port} did not become healthy");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Whether any of its slots is generating.
    fn busy(&self) -> bool {
        let slots = request("GET", &format!("{}/slots", self.url()), None, None).json();
        slots
            .as_array()
            .expect("slots")
            .iter()
            .any(|s| s["is_processing"] == true)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `GET /health` on `port` answers 200 (a refused or reset connection while
/// the server starts is a "no", not a failure).
fn health_ok(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let asked =
        stream.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let mut head = [0u8; 12];
    asked.is_ok() && stream.read_exact(&mut head).is_ok() && head.ends_with(b" 200")
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn complete(url: &str, model: &str, file: &str, prefix: &str, suffix: &str) -> (u16, Value) {
    let body = json!({
        "language": "python",
        "model": model,
        "temperature": 0,
        "segments": {"prefix": prefix, "suffix": suffix, "filepath": file},
    });
    let reply = request(
        "POST",
        &format!("{url}/v1/completions"),
        None,
        Some(&body.to_string()),
    );
    let value = serde_json::from_str(&reply.body).unwrap_or(Value::String(reply.body));
    (reply.status, value)
}

fn text_of(v: &Value) -> String {
    v["choices"][0]["text"].as_str().unwrap_or("").to_string()
}

fn replica_states(url: &str, model: &str) -> Vec<(String, String)> {
    let health = request("GET", &format!("{url}/v1/health"), None, None).json();
    let m = health["models"]
        .as_array()
        .expect("models")
        .iter()
        .find(|m| m["id"] == model)
        .cloned()
        .expect("the model in /v1/health");
    m["backend"]["replicas"]
        .as_array()
        .expect("replicas")
        .iter()
        .map(|r| {
            (
                r["url"].as_str().unwrap_or("").to_string(),
                r["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn metric(text: &str, name: &str, model: &str, replica: &str) -> f64 {
    let head = format!("{name}{{model=\"{model}\",replica=\"{replica}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&head))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {head} in /metrics"))
}

fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

fn serve(a: &Upstream, b: &Upstream) -> (tempfile::TempDir, Launched) {
    let (dir, home) = temp_home();
    // `infill` is checked every 200 ms; `openai` effectively never, so its requests
    // meet a dead replica themselves.
    let config = format!(
        "[completion]\nmulti_line_tokens = 1024\nmax_lines = 1000\n\n\
[[models]]\nname = \"infill\"\nengine = \"llama.cpp-infill\"\nroles = [\"completion\"]\n\
[models.backend]\nreplicas = [\"{a}\", \"{b}\"]\nhealth_interval_ms = 200\n\n\
[[models]]\nname = \"openai\"\nengine = \"openai-completions\"\nroles = [\"completion\"]\n\
[models.backend]\nreplicas = [\"{a}\", \"{b}\"]\nfim_template = \"qwen\"\nhealth_interval_ms = 600000\n",
        a = a.url(),
        b = b.url()
    );
    std::fs::write(home.join("config.toml"), config).expect("config");
    let server = launch(&home, &["--local", "--exit-on-stdin-close"]);
    (dir, server)
}

#[test]
fn completions_fail_over_between_real_llama_cpp_replicas() {
    let a = Upstream::start(free_port());
    let mut b = Upstream::start(free_port());
    let (_dir, server) = serve(&a, &b);
    let url = &server.url;

    // Both kinds complete the same line.
    for model in ["infill", "openai"] {
        let (status, v) = complete(url, model, "m.py", "def add(a, b):\n    return ", "\n");
        assert_eq!(status, 200, "{model}: {v}");
        assert!(text_of(&v).contains("a + b"), "{model}: {v}");
    }

    // Kill one replica; every request still succeeds.
    let b_url = b.url();
    let _ = b.child.kill();
    let _ = b.child.wait();
    for i in 0..8 {
        for model in ["openai", "infill"] {
            let prefix = format!("def add_{i}(a, b):\n    return ");
            let (status, v) = complete(url, model, &format!("f{i}.py"), &prefix, "\n");
            assert_eq!(status, 200, "{model} request {i} after the kill: {v}");
        }
    }
    let metrics = request("GET", &format!("{url}/metrics"), None, None).body;
    for model in ["openai", "infill"] {
        assert!(
            metric(&metrics, "souffleur_backend_ejections_total", model, &b_url) >= 1.0,
            "{model}: {metrics}"
        );
        assert_eq!(
            metric(&metrics, "souffleur_backend_healthy", model, &a.url()),
            1.0
        );
    }
    assert!(
        metric(
            &metrics,
            "souffleur_backend_requests_total",
            "openai",
            &a.url()
        ) >= 8.0,
        "{metrics}"
    );
    let states = replica_states(url, "infill");
    assert!(
        states.contains(&(b_url.clone(), "ejected".to_string())),
        "{states:?}"
    );

    // Restarted, the replica is re-admitted by the health checks.
    let b = Upstream::start(b.port);
    wait_for("re-admission", 30, || {
        replica_states(url, "infill")
            .iter()
            .all(|(_, state)| state == "healthy")
    });
    drop(b);
}

#[test]
fn a_newer_keystroke_stops_the_upstream_generation() {
    let a = Upstream::start(free_port());
    let b = Upstream::start(free_port());
    let (_dir, server) = serve(&a, &b);
    let url = server.url.clone();
    // A long multi-line completion: a list the model goes on writing.
    let prefix =
        "# The first 400 prime numbers, one per line.\nPRIMES = [\n    2,\n    3,\n    5,\n";
    let first = std::thread::spawn({
        let url = url.clone();
        move || complete(&url, "infill", "primes.py", prefix, "]\n")
    });
    wait_for("the upstream to start generating", 30, || {
        a.busy() || b.busy()
    });
    let (status, v) = complete(&url, "infill", "primes.py", "x = ", "\n");
    assert_eq!(status, 200, "{v}");
    let (status, v) = first.join().expect("first request");
    assert_eq!(status, 200, "{v}");
    // The older request ended without a completion, and both replicas are idle soon
    // after (1024 tokens at one thread would take far longer).
    assert!(text_of(&v).is_empty(), "the cancelled request showed: {v}");
    wait_for("the upstream slots to be idle", 10, || {
        !a.busy() && !b.busy()
    });
}

/// Souffleur with the chat model `chat` on `up`'s `/v1/chat/completions`, counting
/// tokens with the model's own tokenizer (its GGUF).
fn serve_chat(up: &Upstream) -> (tempfile::TempDir, Launched) {
    let (dir, home) = temp_home();
    let config = format!(
        "[limits]\nmax_tokens = 4000\n\n[[models]]\nname = \"chat\"\nengine = \"openai-chat\"\nroles = [\"chat\", \"review\"]\n\
[models.backend]\nreplicas = [\"{url}\"]\ntokenizer = \"{}\"\n\n\
[[models]]\nname = \"openai\"\nengine = \"openai-completions\"\nroles = [\"completion\"]\n\
[models.backend]\nreplicas = [\"{url}\"]\nfim_template = \"qwen\"\n\n\
[[models]]\nname = \"infill\"\nengine = \"llama.cpp-infill\"\nroles = [\"completion\"]\n\
[models.backend]\nreplicas = [\"{url}\"]\n",
        coder_model().display(),
        url = up.url(),
    );
    std::fs::write(home.join("config.toml"), config).expect("config");
    let server = launch(&home, &["--local", "--exit-on-stdin-close"]);
    (dir, server)
}

fn chat(url: &str, body: &Value) -> (u16, String) {
    let reply = request(
        "POST",
        &format!("{url}/v1/chat/completions"),
        None,
        Some(&body.to_string()),
    );
    (reply.status, reply.body)
}

/// The JSON of each `data:` event of an SSE body, and whether it ended with `[DONE]`.
fn events(body: &str) -> (Vec<Value>, bool) {
    let data: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .collect();
    let done = data.last() == Some(&"[DONE]");
    let values = data
        .iter()
        .filter(|d| **d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap_or_else(|_| panic!("not JSON: {d}")))
        .collect();
    (values, done)
}

#[test]
fn chat_and_review_go_through_a_real_llama_cpp_chat_endpoint() {
    let up = Upstream::start(free_port());
    let (dir, server) = serve_chat(&up);
    let url = &server.url;
    let ask = "Write a Python function `add(a, b)` that returns the sum. Only the code.";

    // Whole answer, under Souffleur's model name, with the upstream's token counts.
    let (status, body) = chat(
        url,
        &json!({"model": "chat", "messages": [{"role": "user", "content": ask}],
                "max_tokens": 48, "temperature": 0, "user": "dev-1"}),
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "chat");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap_or("");
    assert!(text.contains("def add"), "{v}");
    assert!(v["usage"]["prompt_tokens"].as_u64() > Some(10), "{v}");
    assert!(v["usage"]["completion_tokens"].as_u64() > Some(0), "{v}");

    // Streamed: several content pieces under one id, the usage chunk, `[DONE]`.
    let (status, body) = chat(
        url,
        &json!({"model": "chat", "messages": [{"role": "user", "content": ask}],
                "max_tokens": 48, "temperature": 0, "stream": true,
                "stream_options": {"include_usage": true}}),
    );
    assert_eq!(status, 200, "{body}");
    let (chunks, done) = events(&body);
    assert!(done, "{body}");
    let pieces: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .filter(|t| !t.is_empty())
        .collect();
    assert!(pieces.len() > 3, "{body}");
    assert!(pieces.concat().contains("def add"), "{body}");
    assert!(
        chunks
            .iter()
            .all(|c| c["model"] == "chat" && c["id"] == chunks[0]["id"])
    );
    let last = chunks.last().expect("chunks");
    assert_eq!(last["choices"], json!([]), "{last}");
    assert!(
        last["usage"]["completion_tokens"].as_u64() > Some(0),
        "{last}"
    );

    // A JSON Schema answer is held to the schema by llama.cpp's grammar.
    let (status, body) = chat(
        url,
        &json!({"model": "chat", "temperature": 0, "max_tokens": 64,
                "messages": [{"role": "user", "content": "Name a Python builtin and its arity as JSON."}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "builtin", "strict": true,
                    "schema": {"type": "object", "properties": {"name": {"type": "string"}, "arity": {"type": "integer"}},
                               "required": ["name", "arity"], "additionalProperties": false}}}}),
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    let answer: Value = serde_json::from_str(
        v["choices"][0]["message"]["content"]
            .as_str()
            .expect("content"),
    )
    .expect("the answer is JSON");
    assert!(
        answer["name"].is_string() && answer["arity"].is_i64(),
        "{answer}"
    );

    // What the backend cannot be asked is refused by name; completions are not its role.
    let (status, body) = chat(
        url,
        &json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}], "speculation": "off"}),
    );
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("speculation"), "{body}");
    let (status, v) = complete(url, "chat", "m.py", "x = ", "\n");
    assert_eq!(status, 422, "{v}");

    // OpenAI's legacy completions: with `suffix` a fill-in-the-middle request on both
    // completion kinds, without it a plain continuation (llama.cpp's `/completion`).
    for model in ["openai", "infill"] {
        let reply = request(
            "POST",
            &format!("{url}/v1/completions"),
            None,
            Some(
                &json!({"model": model, "prompt": "def add(a, b):\n    return ", "suffix": "\n",
                         "max_tokens": 16, "temperature": 0, "stop": ["\n"]})
                .to_string(),
            ),
        );
        assert_eq!(reply.status, 200, "{model}: {}", reply.body);
        let v = reply.json();
        assert_eq!(v["object"], "text_completion");
        assert!(text_of(&v).contains("a + b"), "{model}: {v}");
        assert!(v["usage"]["completion_tokens"].as_u64() > Some(0), "{v}");
    }
    let reply = request(
        "POST",
        &format!("{url}/v1/completions"),
        None,
        Some(&json!({"model": "infill", "prompt": "# Python\nimport os\nimport sys\nimport", "max_tokens": 8,
                     "temperature": 0, "top_p": 0.9, "stream": true, "stream_options": {"include_usage": true}})
            .to_string()),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let (chunks, done) = events(&reply.body);
    assert!(done, "{}", reply.body);
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert!(!text.is_empty(), "{}", reply.body);
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "text_completion" && c["model"] == "infill")
    );
    assert_eq!(chunks.last().expect("usage")["choices"], json!([]));
    for (body, param) in [
        (
            json!({"model": "openai", "prompt": "x", "logprobs": 2}),
            "logprobs",
        ),
        (json!({"model": "openai", "prompt": [1, 2, 3]}), "prompt"),
        (json!({"model": "chat", "prompt": "x"}), "model"),
    ] {
        let reply = request(
            "POST",
            &format!("{url}/v1/completions"),
            None,
            Some(&body.to_string()),
        );
        assert_eq!(reply.status, 422, "{}", reply.body);
        assert_eq!(reply.json()["error"]["param"], param, "{}", reply.body);
    }

    // The model's own tokenizer counts the budgets.
    let health = request("GET", &format!("{url}/v1/health"), None, None).json();
    let m = health["models"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["id"] == "chat"))
        .cloned()
        .expect("chat in /v1/health");
    assert_eq!(m["backend"]["token_count"], "tokenizer", "{m}");

    // A review through the backend: the model read the chunk, its answer was readable.
    let diff = "diff --git a/stats.py b/stats.py\nnew file mode 100644\n--- /dev/null\n+++ b/stats.py\n@@ -0,0 +1,6 @@\n+def mean(values):\n+    total = 0\n+    for i in range(len(values) + 1):\n+        total += values[i]\n+    return total / len(values)\n+\n";
    let reply = request(
        "POST",
        &format!("{url}/v1/review"),
        None,
        Some(&json!({"diff": diff, "model": "chat"}).to_string()),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let report = reply.json();
    let summary = &report["summary"];
    assert_eq!(summary["model"], "chat", "{report}");
    assert_eq!(summary["model_chunks"], 1, "{report}");
    assert_eq!(summary["model_errors"], 0, "{report}");
    assert!(summary["prompt_tokens"].as_u64() > Some(100), "{report}");

    // A client that leaves a long stream closes the upstream request.
    {
        use std::io::{Read, Write};
        // Asked to copy 100 numbered lines, the model writes ~880 tokens (about 50 s
        // here at one thread): far longer than the wait for the slot to be idle.
        let lines: String = (1..=100)
            .map(|i| format!("{i}. item number {i}\n"))
            .collect();
        let body = json!({"model": "chat", "stream": true, "max_tokens": 1000, "temperature": 0,
            "messages": [{"role": "system", "content": "Repeat the user's text exactly, line by line."},
                         {"role": "user", "content": lines}]})
        .to_string();
        let addr = server.addr().to_string();
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        write!(
            s,
            "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("send");
        let mut first = [0u8; 2048];
        let n = s.read(&mut first).expect("read");
        let head = String::from_utf8_lossy(&first[..n]).to_string();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let asked = Instant::now();
        // Read until the copy has begun, then leave.
        let mut seen = head;
        while !seen.contains("item") {
            let n = s.read(&mut first).expect("read");
            assert!(n > 0, "the stream ended early: {seen}");
            seen.push_str(&String::from_utf8_lossy(&first[..n]));
        }
        assert!(up.busy());
        drop(s);
        wait_for("the upstream slot to be idle", 10, || !up.busy());
        eprintln!("stream closed after {:?}", asked.elapsed());
    }

    // The audit log has each chat with the upstream's token counts, no checksum (the
    // weights are not Souffleur's to see) and, by default, no text.
    let rows = e2e::audit_rows(&dir.path().join("home/souffleur.db"));
    let chats: Vec<&Value> = rows
        .iter()
        .filter(|r| r["path"] == "/v1/chat/completions" && r["status"] == 200)
        .collect();
    assert!(chats.len() >= 3, "{rows:?}");
    for row in &chats {
        assert_eq!(row["model"], "chat", "{row}");
        assert!(row["model_sha256"].is_null(), "{row}");
        assert!(
            row["prompt"].is_null() && row["completion"].is_null(),
            "{row}"
        );
    }
    assert!(
        chats[0]["prompt_tokens"].as_i64() > Some(10),
        "{:?}",
        chats[0]
    );
}
