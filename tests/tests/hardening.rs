//! The real binary against hostile and careless clients: paths that leave the
//! repository, one token flooding the server, a damaged model, slow and oversized
//! requests, signals, audit completeness, long lines, malformed JSON, fresh tokens.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::{
    Launched, audit_rows, create_token, get, home_with_model, launch, make_repo, post, request,
    run_cli, server, signal, souffleur,
};
use serde_json::{Value, json};

/// A diff that modifies `path` (one added line after a context line).
fn diff_of(path: &str) -> String {
    format!(
        "diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -1,1 +1,2 @@\n root:x:0:0:root:/root:/bin/bash\n+added = 1\n"
    )
}

const ESCAPING_PATHS: &[&str] = &[
    "../beta/banner.py",
    "../../../../etc/passwd",
    "/etc/passwd",
    "src/../../outside.py",
];

#[test]
fn review_diffs_naming_paths_outside_the_repository_are_refused() {
    let user = &server().alpha_user;
    for path in ESCAPING_PATHS {
        let body = json!({"diff": diff_of(path), "repository": "alpha", "model_review": false});
        let r = post("/v1/review", Some(user), &body.to_string());
        assert_eq!(r.status, 422, "{path}: {}", r.body);
        let message = r.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(message.contains(path), "{path} not named in {message:?}");
    }
    // A plain `diff -u` with absolute paths (no a/ b/ prefixes) too.
    let plain = "--- /etc/passwd\n+++ /etc/passwd\n@@ -1,1 +1,2 @@\n root\n+x\n";
    let r = post(
        "/v1/review",
        Some(user),
        &json!({"diff": plain, "repository": "alpha"}).to_string(),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("/etc/passwd"), "{}", r.body);
}

#[test]
fn cli_review_refuses_paths_outside_the_repository() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    make_repo(&repo, &[("a.py", "x = 1\n")]);
    let home = dir.path().join("home");
    for path in ESCAPING_PATHS {
        let run = run_cli(
            &home,
            Some(&repo),
            &["review", "--diff", "-", "--no-model"],
            Some(&diff_of(path)),
        );
        assert_eq!(run.code, 2, "{path}: {} {}", run.stdout, run.stderr);
        assert!(run.stderr.contains(path), "{path}: {}", run.stderr);
    }
}

/// Polls `/v1/health` until `done`; returns every latency.
fn health_latencies(url: &str, done: &std::sync::atomic::AtomicBool) -> Vec<Duration> {
    let mut out = Vec::new();
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        let t = Instant::now();
        let r = request("GET", &format!("{url}/v1/health"), None, None);
        assert_eq!(r.status, 200, "{}", r.body);
        out.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    out
}

#[test]
fn one_token_flooding_large_prompts_stalls_nobody_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    home_with_model(&home);
    let attacker = create_token(&home, "attacker", &[]);
    let other = create_token(&home, "other", &[]);
    let s = launch(&home, &[]);
    // Just under the default 1 MiB body limit.
    let big = "a ".repeat(520_000);
    let legacy = json!({"prompt": big, "max_tokens": 4}).to_string();
    let tabby =
        json!({"language": "python", "segments": {"prefix": big, "suffix": ""}}).to_string();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let url = &s.url;
        let health = scope.spawn(|| health_latencies(url, &done));
        let attack: Vec<_> = (0..24)
            .map(|i| {
                let body = if i % 6 == 5 { &tabby } else { &legacy };
                let (url, attacker) = (url.clone(), attacker.clone());
                scope.spawn(move || {
                    request(
                        "POST",
                        &format!("{url}/v1/completions"),
                        Some(&attacker),
                        Some(body),
                    )
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        let fair = request(
            "POST",
            &format!("{url}/v1/completions"),
            Some(&other),
            Some(&json!({"prompt": "def add(a, b):", "max_tokens": 4}).to_string()),
        );
        let fair_took = started.elapsed();
        let statuses: Vec<u16> = attack
            .into_iter()
            .map(|h| h.join().expect("attack thread").status)
            .collect();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut lat = health.join().expect("health thread");
        lat.sort();
        let p99 = lat[(lat.len() * 99 / 100).min(lat.len() - 1)];
        eprintln!(
            "flood: statuses {statuses:?}; other token's completion {fair_took:?}; health p99 {p99:?} max {:?} over {}",
            lat[lat.len() - 1],
            lat.len()
        );
        assert_eq!(fair.status, 200, "{}", fair.body);
        assert!(
            statuses.iter().all(|s| [200, 413, 429].contains(s)),
            "{statuses:?}"
        );
        assert!(
            statuses.iter().filter(|&&s| s == 413).count() >= 4,
            "oversized legacy prompts must be refused before tokenizing: {statuses:?}"
        );
        // Before the fix health stalled for 50 s; a generous bound catches that.
        assert!(
            lat[lat.len() - 1] < Duration::from_secs(5),
            "health stalled: {p99:?}"
        );
    });
}

#[test]
fn a_damaged_builtin_model_is_refused_at_load_and_by_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let models = home.join("models");
    std::fs::create_dir_all(&models).expect("models");
    let original = e2e::default_model();
    let copy = models.join(original.file_name().expect("name"));
    std::fs::copy(&original, &copy).expect("copy model");
    let ok = run_cli(&home, None, &["model", "list", "--verify"], None);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(ok.stdout.contains("matches pin"), "{}", ok.stdout);
    // Flip one byte in the middle of the weights.
    let mut bytes = std::fs::read(&copy).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&copy, &bytes).expect("write");
    let verify = run_cli(&home, None, &["model", "list", "--verify"], None);
    assert_ne!(verify.code, 0, "{}", verify.stdout);
    assert!(
        verify.stdout.contains("DOES NOT MATCH"),
        "{}",
        verify.stdout
    );
    assert!(
        verify.stderr.contains("souffleur model fetch smollm2-135m"),
        "{}",
        verify.stderr
    );
    let serve = run_cli(&home, None, &["serve", "--port", "0", "--local"], None);
    assert_ne!(serve.code, 0, "a damaged model must not be served");
    assert!(
        serve.stderr.contains("SHA-256") && serve.stderr.contains("model fetch smollm2-135m"),
        "{}",
        serve.stderr
    );
}

/// Writes `bytes` on a fresh connection and reads what comes back until the server
/// closes it or `wait` passes; returns the text and whether the server closed.
fn exchange(addr: &str, bytes: &[u8], wait: Duration) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.write_all(bytes).expect("write");
    read_until_closed(&mut stream, wait)
}

fn read_until_closed(stream: &mut TcpStream, wait: Duration) -> (String, bool) {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (String::from_utf8_lossy(&out).into_owned(), false);
        }
        stream.set_read_timeout(Some(left)).expect("timeout");
        match stream.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (String::from_utf8_lossy(&out).into_owned(), true);
            }
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}

/// A server with short timeouts and a small connection cap.
fn strict_server(home: &Path) -> Launched {
    std::fs::write(
        home.join("config.toml"),
        "[limits]\nheader_timeout_secs = 1\nbody_timeout_secs = 1\nmax_connections_per_address = 4\n",
    )
    .expect("config");
    launch(home, &[])
}

#[test]
fn slow_oversized_and_unauthenticated_requests_are_refused_early() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    home_with_model(&home);
    let token = create_token(&home, "user", &[]);
    let s = strict_server(&home);
    let addr = s.addr();
    let head = |extra: &str| {
        format!(
            "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}\r\n"
        )
    };
    // No token: refused from the headers, the body is never read.
    let (text, _) = exchange(
        addr,
        head("Content-Length: 900000\r\n").as_bytes(),
        Duration::from_secs(3),
    );
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(text.contains("\"error\""), "{text}");
    // An oversized Content-Length with a token, asking for 100-continue: 413 at once.
    let (text, _) = exchange(
        addr,
        head(&format!(
            "Authorization: Bearer {token}\r\nContent-Length: 10000000\r\nExpect: 100-continue\r\n"
        ))
        .as_bytes(),
        Duration::from_secs(3),
    );
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(!text.contains("100 Continue"), "{text}");
    // A client that writes a whole oversized body before reading (as most HTTP
    // libraries do) sees the 413, not a broken pipe: declared and chunked. 12 MB is
    // more than loopback buffers hold, so an unread body would fail the write.
    let big = vec![b' '; 12 << 20];
    let mut declared = head(&format!(
        "Authorization: Bearer {token}\r\nContent-Length: {}\r\n",
        big.len()
    ))
    .into_bytes();
    declared.extend_from_slice(&big);
    let mut chunked = head(&format!(
        "Authorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n"
    ))
    .into_bytes();
    for piece in big.chunks(64 << 10) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    for request in [declared, chunked] {
        let (text, _) = exchange(addr, &request, Duration::from_secs(5));
        assert!(text.starts_with("HTTP/1.1 413"), "{text}");
        assert!(text.contains("exceeds the limit"), "{text}");
    }
    // A body that never arrives: 408 after the body deadline.
    let (text, _) = exchange(
        addr,
        format!(
            "{}{{\"prompt\":",
            head(&format!(
                "Authorization: Bearer {token}\r\nContent-Length: 100\r\n"
            ))
        )
        .as_bytes(),
        Duration::from_secs(5),
    );
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    // Slowloris: headers that never end are cut after the header deadline.
    let (_, closed) = exchange(
        addr,
        b"GET /v1/health HTTP/1.1\r\nHost: x\r\n",
        Duration::from_secs(5),
    );
    assert!(closed, "a connection with unfinished headers was kept open");
    // An idle keep-alive connection is closed too.
    let mut idle = TcpStream::connect(addr).expect("connect");
    idle.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let (text, closed) = read_until_closed(&mut idle, Duration::from_secs(5));
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(closed, "an idle keep-alive connection was kept open");
    // Huge headers: 431 with a JSON body like every other error.
    let junk = "x".repeat(40_000);
    let (text, _) = exchange(
        addr,
        format!("GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Junk: {junk}\r\n\r\n").as_bytes(),
        Duration::from_secs(3),
    );
    assert!(
        text.starts_with("HTTP/1.1 431"),
        "{}",
        &text[..text.len().min(200)]
    );
    assert!(text.contains("\"error\""), "{text}");
    // Four open connections from this address are the cap: a fifth is closed at once.
    let held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut fifth = TcpStream::connect(addr).expect("connect");
    let _ = fifth.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n");
    let (text, closed) = read_until_closed(&mut fifth, Duration::from_millis(800));
    assert!(closed && text.is_empty(), "fifth connection served: {text}");
    drop(held);
    // Once they are gone the address is served again.
    std::thread::sleep(Duration::from_millis(200));
    let r = request("GET", &format!("{}/v1/health", s.url), None, None);
    assert_eq!(r.status, 200);
}

/// Waits for the server to exit; its exit code.
fn wait_exit(s: &mut Launched, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = s.child.try_wait().expect("wait") {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn sigint_finishes_requests_in_flight_flushes_the_audit_log_and_exits_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    home_with_model(&home);
    let token = create_token(&home, "user", &[]);
    let mut s = launch(&home, &[]);
    let url = s.url.clone();
    let body = json!({"messages": [{"role": "user", "content": "Count from one to twenty."}],
                      "max_tokens": 48, "stream": true, "temperature": 0})
    .to_string();
    let streaming = std::thread::spawn(move || {
        request(
            "POST",
            &format!("{url}/v1/chat/completions"),
            Some(&token),
            Some(&body),
        )
    });
    std::thread::sleep(Duration::from_millis(700));
    signal(&s, "INT");
    let code = wait_exit(&mut s, Duration::from_secs(30));
    assert_eq!(code, Some(0), "souffleur serve did not exit 0 after SIGINT");
    let reply = streaming.join().expect("stream");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply.body.contains("data: [DONE]"),
        "in-flight stream was cut: {}",
        reply.body
    );
    let rows = audit_rows(&home.join("souffleur.db"));
    let chat: Vec<&Value> = rows
        .iter()
        .filter(|r| r["path"] == "/v1/chat/completions")
        .collect();
    assert_eq!(chat.len(), 1, "{rows:?}");
    assert_eq!(chat[0]["token"], "user");
    assert!(
        chat[0]["completion_tokens"].as_i64().is_some_and(|n| n > 0),
        "{:?}",
        chat[0]
    );
}

#[test]
fn sigterm_stops_an_idle_server_with_exit_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    home_with_model(&home);
    let mut s = launch(&home, &["--local"]);
    signal(&s, "TERM");
    assert_eq!(wait_exit(&mut s, Duration::from_secs(15)), Some(0));
}

#[test]
fn every_request_with_a_valid_token_is_audited_with_its_token_and_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    home_with_model(&home);
    let token = create_token(&home, "user", &[]);
    let mut s = launch(&home, &[]);
    let url = |p: &str| format!("{}{p}", s.url);
    let t = Some(token.as_str());
    let chat = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6,
                      "stream": true, "temperature": 0});
    let legacy =
        json!({"prompt": "def add(a, b):", "max_tokens": 6, "stream": true, "temperature": 0});
    let calls: Vec<(&str, &str, Option<String>, u16)> = vec![
        ("POST", "/v1/chat/completions", Some(chat.to_string()), 200),
        ("POST", "/v1/completions", Some(legacy.to_string()), 200),
        ("GET", "/metrics", None, 403),
        (
            "POST",
            "/v1/completions",
            Some(json!({"prompt": 1}).to_string()),
            422,
        ),
        (
            "POST",
            "/v1/events",
            Some(json!({"type": "view"}).to_string()),
            200,
        ),
        ("GET", "/v1/models", None, 200),
    ];
    for (method, path, body, status) in &calls {
        let r = request(method, &url(path), t, body.as_deref());
        assert_eq!(r.status, *status, "{path}: {}", r.body);
    }
    signal(&s, "TERM");
    assert_eq!(wait_exit(&mut s, Duration::from_secs(30)), Some(0));
    let rows = audit_rows(&home.join("souffleur.db"));
    assert_eq!(rows.len(), calls.len(), "{rows:?}");
    for row in &rows {
        assert_eq!(row["token"], "user", "{row:?}");
    }
    for row in rows.iter().take(2) {
        assert!(
            row["prompt_tokens"].as_i64().is_some_and(|n| n > 0),
            "{row:?}"
        );
        assert!(
            row["completion_tokens"].as_i64().is_some_and(|n| n > 0),
            "{row:?}"
        );
        assert!(row["model"].as_str().is_some(), "{row:?}");
    }
}

#[test]
fn long_lines_before_the_cursor_never_fail_a_completion() {
    let admin = &server().admin;
    let data_line = format!("DATA = \"{}\"\n", "0123456789abcdef".repeat(512));
    let minified = format!("var a={};", "b.c(d,e),f=g?h:i".repeat(2500));
    let cases = [
        format!("import json\n{data_line}\ndef load():\n    return "),
        format!("{minified}\nfunction total(items) {{\n  return "),
        // The cursor at the end of a 40 KB line.
        minified.clone(),
    ];
    for prefix in cases {
        let body = json!({"language": "python", "segments": {"prefix": prefix, "suffix": "\n"},
                          "debug_options": {"return_prompt": true}});
        let r = post("/v1/completions", Some(admin), &body.to_string());
        assert_eq!(r.status, 200, "{}", r.body);
        let prompt = r.json()["debug_data"]["prompt"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let end: String = prefix
            .chars()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        assert!(
            prompt.ends_with(&end),
            "the text nearest the cursor must be kept"
        );
    }
}

#[test]
fn typing_on_a_line_keeps_the_prompt_start_for_the_prefix_cache() {
    // A file far longer than the prefix budget: the window must start at the same line
    // start for every keystroke on the cursor line, or every keystroke prefills the
    // whole prompt again.
    let admin = &server().admin;
    let file: String = (0..1000)
        .map(|i| {
            format!(
                "    total_{i} = compute(total_{}, factor * {i})\n",
                i.max(1) - 1
            )
        })
        .collect();
    // The prompt before the typed text, for a request whose prefix ends with `typed`.
    let before_typed = |prefix: String, typed: &str| -> String {
        let body = json!({"language": "python",
                          "segments": {"prefix": prefix, "suffix": "\n"},
                          "debug_options": {"return_prompt": true,
                                            "disable_retrieval_augmented_code_completion": true}});
        let r = post("/v1/completions", Some(admin), &body.to_string());
        assert_eq!(r.status, 200, "{}", r.body);
        let prompt = r.json()["debug_data"]["prompt"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(prompt.ends_with(typed), "{prompt:?}");
        prompt[..prompt.len() - typed.len()].to_string()
    };
    let typing = [
        "    res",
        "    resu",
        "    resul",
        "    result = total_999 + ",
    ];
    let prompts: Vec<String> = typing
        .iter()
        .map(|typed| before_typed(format!("{file}{typed}"), typed))
        .collect();
    assert!(
        prompts[0].starts_with("    total_"),
        "the window starts at a line start"
    );
    for p in &prompts[1..] {
        assert_eq!(p, &prompts[0], "the lines before the cursor line moved");
    }
    // An editor's window cut at a character count: its start moves with each keystroke;
    // the prompt still starts at the same line.
    let window = |text: String| text[text.len() - 3000..].to_string();
    let starts: Vec<String> = typing
        .iter()
        .map(|typed| before_typed(window(format!("{file}{typed}")), typed))
        .collect();
    assert!(
        starts[0].starts_with("    total_"),
        "{:?}",
        &starts[0][..40]
    );
    assert!(starts.iter().all(|p| p == &starts[0]), "the window moved");
}

#[test]
fn malformed_json_is_400_and_temperature_over_2_is_422_on_every_route() {
    let admin = Some(server().admin.as_str());
    for path in [
        "/v1/completions",
        "/v1/chat/completions",
        "/v1/review",
        "/v1/events",
    ] {
        for body in [
            "{\"prompt\": \"x\"",
            "{\"prompt\": \"x\"} trailing",
            "{\"messages\": [{\"role\": \"user\",",
        ] {
            let r = post(path, admin, body);
            assert_eq!(r.status, 400, "{path} {body}: {}", r.body);
            assert!(r.body.contains("malformed JSON"), "{}", r.body);
        }
    }
    let hot = [
        (
            "/v1/completions",
            json!({"prompt": "x", "temperature": 2.5}),
        ),
        (
            "/v1/completions",
            json!({"segments": {"prefix": "x"}, "temperature": 2.5}),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}], "temperature": 2.5}),
        ),
    ];
    for (path, body) in hot {
        let r = post(path, admin, &body.to_string());
        assert_eq!(r.status, 422, "{path} {body}: {}", r.body);
        assert!(
            r.body.contains("`temperature` must be between 0 and 2"),
            "{}",
            r.body
        );
    }
}

#[test]
fn a_new_token_works_at_once_and_a_revoked_one_stops_within_a_second() {
    let s = server();
    let token = create_token(&s.home, "fresh-ci", &[]);
    let r = get("/v1/models", Some(&token));
    assert_eq!(r.status, 200, "{}", r.body);
    souffleur(&s.home, &["token", "revoke", "fresh-ci"]);
    let deadline = Instant::now() + Duration::from_secs(3);
    while get("/v1/models", Some(&token)).status != 401 {
        assert!(Instant::now() < deadline, "a revoked token kept working");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn health_without_a_token_says_only_status_and_version() {
    let v = get("/v1/health", None).json();
    let keys: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["status", "version"], "{v}");
    let full = get("/v1/health", Some(&server().alpha_user)).json();
    assert!(full["index"]["repositories"].is_array(), "{full}");
}

#[test]
fn home_files_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("fresh-home");
    create_token(&home, "someone", &[]);
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&home), 0o700);
    assert_eq!(mode(&home.join("souffleur.db")), 0o600);
    // A database an earlier release created world-readable is tightened when opened.
    let old_home = dir.path().join("old-home");
    std::fs::create_dir_all(&old_home).expect("dir");
    let db = old_home.join("souffleur.db");
    std::fs::write(&db, b"").expect("empty database");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    souffleur(&old_home, &["token", "list"]);
    assert_eq!(mode(&db), 0o600);
}

#[test]
fn errors_print_one_line_without_a_backtrace_unless_debugging() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |debug: bool| {
        let mut cmd = Command::new(e2e::binary());
        cmd.args(["serve", "--model", "/nonexistent/model.gguf"])
            .env("SOUFFLEUR_HOME", dir.path())
            .env("RUST_BACKTRACE", "1");
        if debug {
            cmd.env("SOUFFLEUR_DEBUG", "1");
        } else {
            cmd.env_remove("SOUFFLEUR_DEBUG");
        }
        let out = cmd.output().expect("run");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let plain = run(false);
    assert_eq!(plain.trim().lines().count(), 1, "{plain}");
    assert!(plain.contains("not found"), "{plain}");
    assert!(!plain.contains("backtrace"), "{plain}");
    let debug = run(true);
    assert!(debug.trim().lines().count() > 1, "{debug}");
}

#[test]
fn every_request_has_an_id_in_its_response_its_audit_row_and_its_json_log_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    home_with_model(&home);
    std::fs::write(
        home.join("config.toml"),
        "[log]\nformat = \"json\"\nlevel = \"info,server=debug\"\n",
    )
    .expect("config");
    let token = create_token(&home, "ci", &[]);
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut s = e2e::launch_logging_to(&home, &[], log.into());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let send = |id: Option<&str>| {
        let mut req = agent
            .post(format!("{}/v1/completions", s.url))
            .header("Authorization", format!("Bearer {token}"));
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        let reply = req
            .send_json(json!({"prompt": "def add(a, b):", "max_tokens": 4, "temperature": 0}))
            .expect("request");
        let id = reply
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        (reply.status().as_u16(), id)
    };
    // The client's id is kept; without one the server makes one; a malformed one is
    // refused, naming the header, and the refusal still gets an id of its own.
    let (status, kept) = send(Some("ci-run-42.step:7"));
    assert_eq!((status, kept.as_deref()), (200, Some("ci-run-42.step:7")));
    let (status, made) = send(None);
    let made = made.expect("a request id");
    assert_eq!(status, 200);
    assert!(
        made.len() == 16 && made.bytes().all(|b| b.is_ascii_hexdigit()),
        "{made}"
    );
    let (status, fresh) = send(Some("two words"));
    assert_eq!(status, 400);
    let fresh = fresh.expect("an id for the refusal");
    assert!(fresh != made && fresh != "two words", "{fresh}");

    signal(&s, "TERM");
    assert_eq!(wait_exit(&mut s, Duration::from_secs(30)), Some(0));
    let rows = audit_rows(&home.join("souffleur.db"));
    let ids: Vec<&str> = rows
        .iter()
        .filter_map(|r| r["request_id"].as_str())
        .collect();
    assert_eq!(
        ids,
        vec!["ci-run-42.step:7", made.as_str(), fresh.as_str()],
        "{rows:?}"
    );

    // Every log line is one JSON object; the request's lines carry its id.
    let text = std::fs::read_to_string(&log_path).expect("log");
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "serving" && l["level"] == "INFO"),
        "{text}"
    );
    let finished = lines
        .iter()
        .find(|l| l["message"] == "finished" && l["span"]["id"] == "ci-run-42.step:7")
        .unwrap_or_else(|| panic!("no line for the request: {text}"));
    assert_eq!(finished["status"], 200, "{finished}");
    assert_eq!(finished["caller"], "ci", "{finished}");
}
