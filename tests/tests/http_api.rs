//! Every endpoint of `souffleur serve`, through real HTTP, against the real binary,
//! the default model and two indexed git repositories.

use e2e::{get, post, server};
use serde_json::{Value, json};

fn tabby(prefix: &str, suffix: &str, filepath: &str) -> Value {
    json!({
        "language": "python",
        "segments": {"prefix": prefix, "suffix": suffix, "filepath": filepath},
        "debug_options": {"return_snippets": true, "return_prompt": true},
    })
}

#[test]
fn health_reports_the_pinned_model_and_the_index() {
    let h = get("/v1/health", Some(&server().alpha_user));
    assert_eq!(h.status, 200, "{}", h.body);
    let v = h.json();
    assert_eq!(
        v["models"][0]["sha256"],
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    );
    assert_eq!(v["index"]["available"], true);
    // The default build computes on the CPU, and says with which kernels.
    assert_eq!(v["device"], "cpu");
    assert_eq!(v["models"][0]["device"], "cpu");
    let kernels = v["models"][0]["kernels"].to_string();
    assert!(kernels.contains("quantised products"), "{kernels}");
    let repos = v["index"]["repositories"].to_string();
    assert!(repos.contains("alpha") && repos.contains("beta"), "{repos}");
}

#[test]
fn tokens_are_required_and_roles_enforced() {
    let body = tabby("x = ", "", "a.py").to_string();
    assert_eq!(post("/v1/completions", None, &body).status, 401);
    assert_eq!(
        post("/v1/completions", Some("sfl_wrong"), &body).status,
        401
    );
    let r = get("/metrics", Some(&server().alpha_user));
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.json()["error"]["message"].as_str().is_some());
    let r = get("/metrics", Some(&server().admin));
    assert_eq!(r.status, 200);
    assert!(r.body.contains("souffleur_requests_total"), "{}", r.body);
    assert!(r.body.contains("souffleur_prefix_cache_hit_ratio"));
    assert_eq!(get("/v1/models", None).status, 401);
}

#[test]
fn tabby_completion_uses_index_context_within_the_token_scope() {
    let prefix = "from billing import Invoice\n\ninvoice = Invoice(customer, items)\ntotal = compute_invoice_total(";
    let r = post(
        "/v1/completions",
        Some(&server().alpha_user),
        &tabby(prefix, ")\n", "app/main.py").to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert!(v["id"].as_str().is_some());
    let snippets = v["debug_data"]["snippets"].as_array().expect("snippets");
    assert!(
        snippets
            .iter()
            .any(|s| s["path"] == "billing.py" && s["repo"] == "alpha"),
        "the definition from alpha is retrieved: {snippets:?}"
    );
    let prompt = v["debug_data"]["prompt"].as_str().expect("prompt");
    assert!(prompt.contains("# Path: billing.py"), "{prompt}");
    assert!(prompt.ends_with(prefix), "the cursor text ends the prompt");
    if let Some(text) = v["choices"][0]["text"].as_str() {
        assert!(
            !text.contains('\n'),
            "mid-line completion is single-line: {text:?}"
        );
        assert!(!text.trim().is_empty());
    }
}

#[test]
fn the_edited_files_code_beyond_the_window_is_retrieved_but_not_what_the_model_sees() {
    let ledger = e2e::alpha_ledger();
    let cut = ledger.rfind("fees\n").expect("cursor place");
    let (prefix, suffix) = ledger.split_at(cut);
    let r = post(
        "/v1/completions",
        Some(&server().alpha_user),
        &tabby(prefix, suffix, "ledger.py").to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let snippets = v["debug_data"]["snippets"].as_array().expect("snippets");
    let own: Vec<&str> = snippets
        .iter()
        .filter(|s| s["path"] == "ledger.py")
        .filter_map(|s| s["text"].as_str())
        .collect();
    // The helper's definition, hundreds of lines above, is context the model lacks,
    assert!(
        own.iter().any(|t| t.contains("def balance_after_fees")),
        "{snippets:?}"
    );
    // and the best snippet goes last, nearest the cursor;
    let prompt = v["debug_data"]["prompt"].as_str().expect("prompt");
    let last_snippet = prompt.rfind("# Path: ").expect("snippets in the prompt");
    assert!(
        prompt.rfind("# def balance_after_fees") > Some(last_snippet),
        "{prompt}"
    );
    // the lines right above the cursor are in the prompt already.
    assert!(
        prefix.split_whitespace().count() > 1000,
        "the file is longer than the prompt's window"
    );
    assert!(
        own.iter()
            .all(|t| !t.contains("post_entry_149") && !t.contains("def close_books")),
        "{own:?}"
    );
}

#[test]
fn a_scoped_token_never_receives_snippets_from_other_repositories() {
    // Retrieval reads the lines before the cursor line.
    let prefix = "user = current_user()\nbanner = render_secret_banner(user, 3)\nagain = ";
    let body = tabby(prefix, "\n", "app/main.py").to_string();
    // The admin sees every repository: the definition is found in beta ...
    let admin = post("/v1/completions", Some(&server().admin), &body).json();
    let all = admin["debug_data"]["snippets"].to_string();
    assert!(all.contains("render_secret_banner"), "{all}");
    // ... and the alpha-only token never gets it.
    let scoped = post("/v1/completions", Some(&server().alpha_user), &body).json();
    let snippets = scoped["debug_data"]["snippets"]
        .as_array()
        .expect("snippets");
    assert!(snippets.iter().all(|s| s["repo"] != "beta"), "{snippets:?}");
    assert!(
        !scoped["debug_data"]["prompt"]
            .as_str()
            .unwrap_or("")
            .contains("TOP SECRET")
    );
}

#[test]
fn openai_legacy_completions_are_deterministic_at_temperature_zero() {
    let body =
        json!({"prompt": "def add(a, b):\n", "max_tokens": 12, "temperature": 0}).to_string();
    let a = post("/v1/completions", Some(&server().admin), &body);
    assert_eq!(a.status, 200, "{}", a.body);
    let b = post("/v1/completions", Some(&server().admin), &body);
    let (a, b) = (a.json(), b.json());
    assert_eq!(a["object"], "text_completion");
    assert!(!a["choices"][0]["text"].as_str().unwrap_or("").is_empty());
    assert_eq!(a["choices"][0]["text"], b["choices"][0]["text"]);
    assert_eq!(a["usage"]["completion_tokens"], 12);
}

#[test]
fn speculation_per_request_changes_no_greedy_output() {
    let prompt = "a = [1, 2, 3]\nb = [1, 2, 3]\nc = [1,";
    let ask = |spec: &str| {
        let body =
            json!({"prompt": prompt, "max_tokens": 24, "temperature": 0, "speculation": spec});
        let r = post("/v1/completions", Some(&server().admin), &body.to_string());
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["choices"][0]["text"]
            .as_str()
            .expect("text")
            .to_string()
    };
    let plain = ask("off");
    assert_eq!(ask("ngram"), plain);
    assert_eq!(ask("ngram:2"), plain);
    // Drafting is visible in /metrics.
    let m = get("/metrics", Some(&server().admin)).body;
    let drafted: f64 = m
        .lines()
        .filter(|l| l.starts_with("souffleur_drafted_tokens_total{model="))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(drafted > 0.0, "{m}");
    assert!(m.contains("souffleur_accepted_draft_tokens_total"), "{m}");
    // This server has no draft model: asking for one is a clear 422.
    let body = json!({"prompt": prompt, "max_tokens": 4, "speculation": "draft"});
    let r = post("/v1/completions", Some(&server().admin), &body.to_string());
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("draft model"), "{}", r.body);
}

#[test]
fn chat_streams_server_sent_events_that_end_with_done() {
    let body = json!({"messages": [{"role": "user", "content": "Write a Python hello world."}],
                      "max_tokens": 16, "temperature": 0, "stream": true,
                      "stream_options": {"include_usage": true}})
    .to_string();
    let r = post("/v1/chat/completions", Some(&server().admin), &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let data: Vec<&str> = r
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("chunk JSON"))
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    // As OpenAI sends it: the finish reason, then a chunk of its own with the usage
    // (no choices); every earlier chunk has `usage: null`.
    let [.., finish, last] = chunks.as_slice() else {
        panic!("too few chunks: {chunks:?}");
    };
    assert!(finish["choices"][0]["finish_reason"].is_string());
    assert_eq!(last["choices"], json!([]));
    assert!(
        last["usage"]["completion_tokens"]
            .as_u64()
            .is_some_and(|n| n >= 1)
    );
    assert!(
        chunks[..chunks.len() - 1]
            .iter()
            .all(|c| c["usage"].is_null())
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(!text.is_empty());
}

#[test]
fn bad_requests_get_json_errors_with_the_right_status_and_the_server_keeps_serving() {
    let admin = Some(server().admin.as_str());
    let cases: Vec<(&str, String, u16)> = vec![
        ("/v1/completions", "{not json".into(), 400),
        ("/v1/completions", "".into(), 400),
        ("/v1/completions", "[1, 2]".into(), 422),
        ("/v1/completions", json!({"neither": 1}).to_string(), 422),
        (
            "/v1/completions",
            json!({"segments": {"prefix": 5}}).to_string(),
            422,
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "model": "gpt-4o"}).to_string(),
            404,
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "max_tokens": 100000}).to_string(),
            422,
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "temperature": -1}).to_string(),
            422,
        ),
        (
            "/v1/completions",
            json!({"prompt": "word ".repeat(5000)}).to_string(),
            413,
        ),
        (
            "/v1/completions",
            json!({"prompt": "x".repeat(70_000)}).to_string(),
            413,
        ),
        (
            "/v1/chat/completions",
            json!({"messages": []}).to_string(),
            422,
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "wizard", "content": "x"}]}).to_string(),
            422,
        ),
        ("/v1/events", json!({"no_type": true}).to_string(), 422),
        (
            "/v1/completions",
            json!({"prompt": "x", "speculation": "magic"}).to_string(),
            422,
        ),
        ("/v1/nope", "{}".into(), 404),
    ];
    for (path, body, status) in cases {
        let r = post(path, admin, &body);
        assert_eq!(r.status, status, "{path} {body:.80}: {}", r.body);
        let v = r.json();
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}",
            r.body
        );
    }
    assert_eq!(get("/v1/health", None).status, 200);
}

#[test]
fn events_are_accepted_and_counted() {
    let ev = json!({"type": "select", "completion_id": "cmpl-1", "choice_index": 0});
    let r = post("/v1/events", Some(&server().alpha_user), &ev.to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    let m = get("/metrics", Some(&server().admin)).body;
    assert!(
        m.contains("souffleur_completion_events_total{type=\"select\"}"),
        "{m}"
    );
}

#[test]
fn models_lists_the_served_model() {
    let r = get("/v1/models", Some(&server().alpha_user));
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "SmolLM2-135M-Instruct.Q4_1");
}

#[test]
fn too_many_concurrent_requests_per_token_get_429() {
    // A dedicated token: the limit is per token (6 in the test config).
    let token = e2e::souffleur(
        &server().home,
        &["token", "create", "--name", "burst", "--repos", "*"],
    )
    .lines()
    .last()
    .expect("token")
    .to_string();
    std::thread::sleep(std::time::Duration::from_millis(1500)); // the server reloads tokens each second
    let body =
        json!({"prompt": "def sort(values):\n", "max_tokens": 64, "temperature": 0}).to_string();
    let handles: Vec<_> = (0..14)
        .map(|_| {
            let (body, token) = (body.clone(), token.clone());
            std::thread::spawn(move || post("/v1/completions", Some(&token), &body).status)
        })
        .collect();
    let statuses: Vec<u16> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    e2e::souffleur(&server().home, &["token", "revoke", "burst"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(
        post("/v1/completions", Some(&token), &body).status,
        401,
        "revoked"
    );
}

#[test]
fn a_newer_keystroke_cancels_the_older_generation_for_the_same_file() {
    let slow = json!({"language": "python", "user": "typist",
        "segments": {"prefix": "class Parser:\n", "suffix": "", "filepath": "/work/x/parser.py"}});
    let older = std::thread::spawn(move || {
        post("/v1/completions", Some(&server().admin), &slow.to_string())
    });
    std::thread::sleep(std::time::Duration::from_millis(150));
    let newer = json!({"language": "python", "user": "typist",
        "segments": {"prefix": "class Parser:\n    def", "suffix": "", "filepath": "/work/x/parser.py"}});
    let r = post("/v1/completions", Some(&server().admin), &newer.to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    let old = older.join().expect("thread");
    assert_eq!(old.status, 200, "{}", old.body);
    let m = get("/metrics", Some(&server().admin)).body;
    assert!(
        m.contains("souffleur_completions_total{outcome=\"cancelled\"}"),
        "the older request was cancelled: {}\n{m}",
        old.body
    );
}

/// The official `openai` Python package as a client (installed by scripts/test.sh into
/// `.venv-e2e`; `SOUFFLEUR_E2E_PYTHON` points at another interpreter that has it).
#[test]
fn the_official_openai_python_client_works() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = std::env::var_os("SOUFFLEUR_E2E_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join(".venv-e2e/bin/python"));
    assert!(
        python.is_file(),
        "{} is missing: run scripts/test.sh (it creates .venv-e2e with the openai package)",
        python.display()
    );
    let out = std::process::Command::new(python)
        .arg(root.join("tests/python/openai_client.py"))
        .arg(&server().url)
        .arg(&server().admin)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "openai client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// tabby-agent 1.5.0 asks `GET /v1beta/server_setting` after every successful health
/// check (404 before) and stops sending usage data to its vendor when told; a client
/// without a valid token must be told as well.
#[test]
fn tabby_server_setting_turns_client_side_telemetry_off_with_or_without_a_token() {
    for token in [None, Some("sfl_wrong"), Some(server().alpha_user.as_str())] {
        let r = get("/v1beta/server_setting", token);
        assert_eq!(r.status, 200, "{token:?}: {}", r.body);
        assert_eq!(r.json(), json!({"disable_client_side_telemetry": true}));
    }
}

/// Tabby's `GET /v1beta/models`: `{"completion": [ids], "chat": [ids]}`, with a token.
#[test]
fn tabby_models_lists_the_served_model_for_completion_and_chat() {
    assert_eq!(get("/v1beta/models", None).status, 401);
    assert_eq!(get("/v1beta/models", Some("sfl_wrong")).status, 401);
    let r = get("/v1beta/models", Some(&server().alpha_user));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"completion": ["SmolLM2-135M-Instruct.Q4_1"], "chat": ["SmolLM2-135M-Instruct.Q4_1"]})
    );
}

/// Requests that name no file are not keystrokes of one editor: two at once from the
/// same caller (clients sharing a `--local` server) both run to the end.
#[test]
fn requests_without_a_file_do_not_cancel_each_other() {
    let (_dir, home) = e2e::temp_home();
    let s = e2e::launch(&home, &["--local", "--exit-on-stdin-close"]);
    let body = json!({"language": "python",
        "segments": {"prefix": "class Parser:\n    def __init__(self):\n", "suffix": ""}})
    .to_string();
    let url = format!("{}/v1/completions", s.url);
    let older = {
        let (url, body) = (url.clone(), body.clone());
        std::thread::spawn(move || e2e::request("POST", &url, None, Some(&body)))
    };
    std::thread::sleep(std::time::Duration::from_millis(150));
    let newer = e2e::request("POST", &url, None, Some(&body));
    assert_eq!(newer.status, 200, "{}", newer.body);
    assert_eq!(older.join().expect("thread").status, 200);
    let metrics = e2e::request("GET", &format!("{}/metrics", s.url), None, None).body;
    assert!(
        !metrics.contains("outcome=\"cancelled\""),
        "a request was cancelled:\n{metrics}"
    );
}
