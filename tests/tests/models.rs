//! Several models in one server: routing by role and by name, `/v1/models`,
//! `/v1/health` and `/metrics` per model, the audit log naming the model (id and
//! SHA-256), reloads (admin command and SIGHUP) under load that fail no request,
//! idle unloading, and the memory budget at start-up.
//!
//! The two models are real and small: the tiny test model and a second version of
//! it with fewer blocks (`souffleur model make-draft`: a different file, a different
//! SHA-256, the same tokenizer), so CI stays fast.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use e2e::{Launched, audit_rows, launch, request, run_cli, signal, souffleur, temp_home};
use serde_json::{Value, json};

/// `[[models]]` entries: the tiny model for completion and chat.
const TINY: &str = "[[models]]\nname = \"tiny\"\npath = \"SmolLM2-135M-Instruct.Q4_1.gguf\"\nroles = [\"completion\", \"chat\"]\n";

/// The second version, for chat and review.
const TINY_V2: &str =
    "[[models]]\nname = \"tiny-v2\"\npath = \"smollm2-v2.gguf\"\nroles = [\"chat\", \"review\"]\n";

/// A home with the tiny model and its second version in `models/`.
fn two_model_home() -> (tempfile::TempDir, PathBuf) {
    let (dir, home) = temp_home();
    souffleur(
        &home,
        &[
            "model",
            "make-draft",
            "--layers",
            "0-11",
            "--out",
            "smollm2-v2.gguf",
        ],
    );
    (dir, home)
}

fn write_config(home: &Path, text: &str) {
    std::fs::write(home.join("config.toml"), text).expect("config");
}

fn chat(url: &str, model: Option<&str>) -> (u16, Value) {
    let mut body = json!({"messages": [{"role": "user", "content": "Say hi."}],
                          "max_tokens": 4, "temperature": 0});
    if let Some(m) = model {
        body["model"] = json!(m);
    }
    let reply = request(
        "POST",
        &format!("{url}/v1/chat/completions"),
        None,
        Some(&body.to_string()),
    );
    let value = serde_json::from_str(&reply.body).unwrap_or(Value::String(reply.body));
    (reply.status, value)
}

fn models(url: &str) -> Vec<Value> {
    let reply = request("GET", &format!("{url}/v1/models"), None, None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["data"].as_array().expect("data").clone()
}

fn model<'a>(list: &'a [Value], id: &str) -> &'a Value {
    list.iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("no model {id} in {list:?}"))
}

fn ids(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|m| m["id"].as_str().expect("id").to_string())
        .collect()
}

/// Waits (up to a minute) until `/v1/models` lists exactly `wanted`.
fn wait_for_models(url: &str, wanted: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = ids(&models(url));
        if now == wanted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "models stayed {now:?}, wanted {wanted:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn serve(home: &Path) -> Launched {
    launch(home, &["--local", "--exit-on-stdin-close"])
}

#[test]
fn requests_go_to_their_roles_default_or_the_model_they_name() {
    let (_dir, home) = two_model_home();
    write_config(
        &home,
        &format!("{TINY}\n{TINY_V2}\n[roles]\nchat = \"tiny-v2\"\n"),
    );
    let mut s = serve(&home);
    let url = s.url.clone();

    let list = models(&url);
    assert_eq!(ids(&list), ["tiny", "tiny-v2"]);
    let (tiny, v2) = (model(&list, "tiny"), model(&list, "tiny-v2"));
    assert_eq!(tiny["roles"], json!(["completion", "chat"]));
    assert_eq!(tiny["default_for"], json!(["completion"]));
    assert_eq!(v2["default_for"], json!(["chat", "review"]));
    assert_ne!(tiny["sha256"], v2["sha256"]);
    for m in [tiny, v2] {
        assert_eq!(m["state"], "loaded");
        assert_eq!(m["context_length"], 8192);
        assert!(
            m["memory_bytes"]["weights"].as_u64().unwrap_or(0) > 10 << 20,
            "{m}"
        );
        assert!(!m["quantisation"].as_array().expect("types").is_empty());
    }
    assert!(
        tiny["parameters"].as_u64() > v2["parameters"].as_u64(),
        "the second version has fewer blocks"
    );

    // Chat goes to the chat default unless a model is named (by id or SHA-256 prefix).
    let (status, answer) = chat(&url, None);
    assert_eq!((status, answer["model"].as_str()), (200, Some("tiny-v2")));
    assert_eq!(chat(&url, Some("tiny")).1["model"], "tiny");
    let prefix = &tiny["sha256"].as_str().expect("sha")[..16];
    assert_eq!(chat(&url, Some(prefix)).1["model"], "tiny");
    let (status, error) = chat(&url, Some("nope"));
    assert_eq!(status, 404, "{error}");
    let message = error["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("`nope`") && message.contains("`tiny` (completion, chat)"),
        "{message}"
    );

    // Completions (OpenAI's and Tabby's shapes) go to the completion default.
    let legacy = request(
        "POST",
        &format!("{url}/v1/completions"),
        None,
        Some(r#"{"prompt": "def add(a, b):", "max_tokens": 4, "temperature": 0}"#),
    );
    assert_eq!(legacy.json()["model"], "tiny", "{}", legacy.body);
    let tabby = request(
        "POST",
        &format!("{url}/v1/completions"),
        None,
        Some(
            r#"{"language": "python", "segments": {"prefix": "def add(a, b):\n    ", "suffix": "\n"}}"#,
        ),
    );
    assert_eq!(tabby.status, 200, "{}", tabby.body);
    let tabby_models = request("GET", &format!("{url}/v1beta/models"), None, None).json();
    assert_eq!(
        tabby_models,
        json!({"completion": ["tiny"], "chat": ["tiny-v2", "tiny"]})
    );

    // Health and metrics show each model.
    let health = request("GET", &format!("{url}/v1/health"), None, None).json();
    assert_eq!(health["model"], "tiny");
    assert_eq!(
        ids(health["models"].as_array().expect("models")),
        ["tiny", "tiny-v2"]
    );
    let metrics = request("GET", &format!("{url}/metrics"), None, None).body;
    for id in ["tiny", "tiny-v2"] {
        assert!(
            metrics.contains(&format!(
                "souffleur_generated_tokens_total{{model=\"{id}\"}}"
            )),
            "{metrics}"
        );
    }

    // Every model call's audit row names the model and its checksum.
    signal(&s, "TERM");
    let _ = s.child.wait();
    let rows = audit_rows(&home.join("souffleur.db"));
    let calls: Vec<&Value> = rows
        .iter()
        .filter(|r| r["path"] == "/v1/chat/completions" || r["path"] == "/v1/completions")
        .collect();
    assert_eq!(calls.len(), 6, "{rows:?}");
    for row in calls {
        if row["status"] == 404 {
            assert_eq!(row["model"], Value::Null);
            continue;
        }
        let m = model(&list, row["model"].as_str().expect("model named"));
        assert_eq!(row["model_sha256"], m["sha256"], "{row}");
    }
}

#[test]
fn reloads_switch_models_under_load_without_failing_a_request() {
    let (_dir, home) = two_model_home();
    write_config(&home, TINY);
    let s = serve(&home);
    let url = s.url.clone();
    assert_eq!(ids(&models(&url)), ["tiny"]);

    // Three clients chat without pause while the configuration changes twice.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (url, stop) = (url.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let (status, answer) = chat(&url, None);
                    seen.push((status, answer["model"].as_str().unwrap_or("").to_string()));
                }
                seen
            })
        })
        .collect();
    // A long streamed answer from the model that the second reload removes.
    let streaming = {
        let url = url.clone();
        std::thread::spawn(move || {
            let body = json!({"model": "tiny", "stream": true, "max_tokens": 256,
                "messages": [{"role": "user", "content": "Count from one to fifty."}]});
            request(
                "POST",
                &format!("{url}/v1/chat/completions"),
                None,
                Some(&body.to_string()),
            )
        })
    };
    std::thread::sleep(Duration::from_millis(800));

    // 1: the second version joins and becomes the chat default (the admin command).
    write_config(
        &home,
        &format!("{TINY}\n{TINY_V2}\n[roles]\nchat = \"tiny-v2\"\n"),
    );
    let out = run_cli(&home, None, &["admin", "reload", "--server", &url], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("loaded: tiny-v2"), "{out:?}");
    assert!(out.stdout.contains("kept: tiny"), "{out:?}");
    std::thread::sleep(Duration::from_millis(800));

    // 2: the first version goes (SIGHUP); the stream on it still finishes.
    write_config(
        &home,
        "[[models]]\nname = \"tiny-v2\"\npath = \"smollm2-v2.gguf\"\nroles = [\"completion\", \"chat\", \"review\"]\n",
    );
    signal(&s, "HUP");
    wait_for_models(&url, &["tiny-v2"]);
    std::thread::sleep(Duration::from_millis(800));
    stop.store(true, Ordering::Relaxed);

    let mut seen = Vec::new();
    for c in clients {
        seen.extend(c.join().expect("client"));
    }
    let failed: Vec<_> = seen.iter().filter(|(status, _)| *status != 200).collect();
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    let on = |id: &str| seen.iter().filter(|(_, m)| m == id).count();
    assert!(on("tiny") > 0 && on("tiny-v2") > 0, "{seen:?}");
    let stream = streaming.join().expect("stream");
    assert_eq!(stream.status, 200);
    assert!(
        stream.body.contains("\"model\":\"tiny\""),
        "{}",
        stream.body
    );
    assert!(
        stream.body.trim_end().ends_with("data: [DONE]"),
        "{}",
        stream.body
    );

    // A configuration that cannot be served is refused; the models stay.
    write_config(
        &home,
        &format!("{TINY_V2}\n[[models]]\nname = \"gone\"\npath = \"missing.gguf\"\n"),
    );
    let out = run_cli(&home, None, &["admin", "reload", "--server", &url], None);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("422") && out.stderr.contains("missing.gguf"),
        "{out:?}"
    );
    assert_eq!(ids(&models(&url)), ["tiny-v2"]);
    assert_eq!(chat(&url, None).0, 200);

    // The reload takes no body: one sent is refused, not ignored.
    let with_body = request(
        "POST",
        &format!("{url}/v1/admin/reload"),
        None,
        Some("{\"models\": []}"),
    );
    assert_eq!(with_body.status, 422, "{}", with_body.body);
    assert!(
        with_body.body.contains("takes no body"),
        "{}",
        with_body.body
    );

    // Sections a reload cannot apply are named.
    write_config(&home, &format!("{TINY_V2}\n[limits]\nmax_tokens = 100\n"));
    let out = run_cli(&home, None, &["admin", "reload", "--server", &url], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("kept: tiny-v2"), "{out:?}");
    assert!(
        out.stderr.contains("[limits]") && out.stderr.contains("restart"),
        "{out:?}"
    );
}

#[test]
fn an_idle_model_is_unloaded_and_loaded_again_by_the_next_request() {
    let (_dir, home) = temp_home();
    write_config(&home, &format!("{TINY}unload_after_secs = 1\n"));
    let s = serve(&home);
    assert_eq!(chat(&s.url, None).0, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    while models(&s.url)[0]["state"] != "unloaded" {
        assert!(Instant::now() < deadline, "never unloaded");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(models(&s.url)[0]["memory_bytes"]["total"], 0);
    let (status, answer) = chat(&s.url, None);
    assert_eq!(
        (status, answer["model"].as_str()),
        (200, Some("tiny")),
        "{answer}"
    );
    assert_eq!(models(&s.url)[0]["state"], "loaded");
}

#[test]
fn a_configuration_over_the_memory_budget_does_not_start() {
    let (_dir, home) = temp_home();
    write_config(&home, &format!("{TINY}\n[memory]\nbudget_mib = 16\n"));
    let mut child = std::process::Command::new(e2e::binary())
        .args(["serve", "--local", "--port", "0"])
        .env("SOUFFLEUR_HOME", &home)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started over its memory budget");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    assert!(!status.success());
    assert!(
        stderr.contains("model `tiny` does not fit")
            && stderr.contains("16.0 MiB of memory.budget_mib"),
        "{stderr}"
    );
}

#[test]
fn a_local_review_uses_the_review_model_of_the_configuration() {
    let (_dir, home) = two_model_home();
    write_config(&home, &format!("{TINY}\n{TINY_V2}"));
    let diff = "diff --git a/calc.py b/calc.py\nnew file mode 100644\n--- /dev/null\n+++ b/calc.py\n@@ -0,0 +1,2 @@\n+def ratio(a, b):\n+    return a / b\n";
    let out = run_cli(
        &home,
        None,
        &["review", "--diff", "-", "--local", "--fail-on", "never"],
        Some(diff),
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr
            .contains("model tiny-v2 (the review model `tiny-v2` of the configuration)"),
        "{}",
        out.stderr
    );
    // Only small models here: the review says how to get the one it prefers.
    assert!(
        out.stderr
            .contains("souffleur model fetch qwen2.5-coder-1.5b"),
        "{}",
        out.stderr
    );
    let report: Value = serde_json::from_str(&out.stdout).expect("JSON report");
    assert_eq!(report["summary"]["model"], "tiny-v2");
}
