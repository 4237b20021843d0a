//! Measurement, not a check (`#[ignore]`d): keystrokes typed into a real file through the
//! stdio client against a `--local` server; for each one, the time from sending
//! `didChange` to receiving the `inlineCompletion` answer, the HTTP time the adapter logs
//! (`trace`), and the difference (the adapter's own overhead, debounce included or not).
//!
//! cargo test -p lsp --test latency -- --ignored --nocapture

mod common;

use std::time::{Duration, Instant};

use common::{LspClient, inline_texts};
use serde_json::json;

/// What the user types after `print(` in [`common::FIBONACCI`] (about 100 keystrokes).
const TYPED: &str = "f\"{i}: {fibonacci(i)}\")\n    return count\n\n\nif __name__ == \"__main__\":\n    print_first_fibonacci_numbers(10)\n";

struct Sample {
    lsp: Duration,
    http: Option<Duration>,
    adapter_total: Duration,
    chars: usize,
}

fn percentile(values: &mut [f64], p: usize) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[(values.len() * p / 100).min(values.len() - 1)]
}

fn field(message: &str, name: &str) -> Option<u64> {
    message
        .split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

fn summary(label: &str, values: &mut [f64]) {
    let n = values.len();
    let (p50, p99) = (percentile(values, 50), percentile(values, 99));
    println!("{label:<52} n={n:<4} p50={p50:>9.3} ms  p99={p99:>9.3} ms");
}

#[test]
#[ignore = "measurement: run with --ignored --nocapture"]
fn keystroke_to_inline_completion_latency() {
    let server = e2e::local_server();
    let debounce_ms = std::env::var("SOUFFLEUR_BENCH_DEBOUNCE_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(75);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fib.py");
    std::fs::write(&path, common::FIBONACCI).expect("write");
    let mut lsp = LspClient::start(&[]);
    lsp.initialize(json!({"url": server.url, "debounceMs": debounce_ms, "trace": true}));
    let uri = lsp.open(&path, "python");

    // Warm the server (model pages, prefix cache) once.
    let warm = lsp.request(
        "textDocument/inlineCompletion",
        json!({"textDocument": {"uri": uri}, "position": {"line": 9, "character": 14},
               "context": {"triggerKind": 1}}),
    );
    println!("warm-up answer: {:?}", inline_texts(&warm));

    let (mut line, mut character) = (9u32, 14u32);
    let mut samples = Vec::new();
    for (n, ch) in TYPED.chars().enumerate() {
        let traces_before = lsp.notifications.len();
        let sent = Instant::now();
        lsp.insert(&uri, n as i64 + 2, line, character, &ch.to_string());
        if ch == '\n' {
            line += 1;
            character = 0;
        } else {
            character += ch.len_utf16() as u32;
        }
        let id = lsp.send_request(
            "textDocument/inlineCompletion",
            json!({"textDocument": {"uri": uri}, "position": {"line": line, "character": character},
                   "context": {"triggerKind": 2}}),
        );
        let response = lsp.wait_response(id, Duration::from_secs(120));
        let lsp_time = sent.elapsed();
        let chars = inline_texts(&response["result"])
            .first()
            .map_or(0, |t| t.chars().count());
        // The log message and the response travel separately: match them by position.
        let tag = format!("line={line} character={character} ");
        let find = |lsp: &LspClient| {
            lsp.notifications[traces_before..]
                .iter()
                .filter_map(|m| m["params"]["message"].as_str())
                .find(|m| m.starts_with("souffleur-lsp completion") && m.contains(&tag))
                .map(str::to_string)
        };
        let mut trace = find(&lsp);
        let deadline = Instant::now() + Duration::from_secs(2);
        while trace.is_none() && Instant::now() < deadline {
            lsp.drain(Duration::from_millis(5));
            trace = find(&lsp);
        }
        let Some(trace) = trace else {
            println!("keystroke {n}: no trace (error?) {response}");
            continue;
        };
        let reused = trace.contains("reused=true");
        samples.push(Sample {
            lsp: lsp_time,
            http: (!reused).then(|| Duration::from_micros(field(&trace, "http_us").unwrap_or(0))),
            adapter_total: Duration::from_micros(field(&trace, "total_us").unwrap_or(0)),
            chars,
        });
    }
    assert!(lsp.shutdown().success());

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let debounce = debounce_ms as f64;
    let http: Vec<&Sample> = samples.iter().filter(|s| s.http.is_some()).collect();
    let reused: Vec<&Sample> = samples.iter().filter(|s| s.http.is_none()).collect();
    println!(
        "\n{} keystrokes, debounce {debounce_ms} ms: {} went to the server, {} were answered from the last completion (type-through); {} answers were non-empty",
        samples.len(),
        http.len(),
        reused.len(),
        samples.iter().filter(|s| s.chars > 0).count()
    );
    summary(
        "didChange -> inlineCompletion, all keystrokes",
        &mut samples.iter().map(|s| ms(s.lsp)).collect::<Vec<_>>(),
    );
    summary(
        "  ... answered by the server",
        &mut http.iter().map(|s| ms(s.lsp)).collect::<Vec<_>>(),
    );
    summary(
        "  ... typed through (no HTTP)",
        &mut reused.iter().map(|s| ms(s.lsp)).collect::<Vec<_>>(),
    );
    summary(
        "HTTP call (POST /v1/completions, as logged)",
        &mut http
            .iter()
            .filter_map(|s| s.http.map(ms))
            .collect::<Vec<_>>(),
    );
    summary(
        "adapter overhead = LSP latency - HTTP",
        &mut http
            .iter()
            .filter_map(|s| s.http.map(|h| ms(s.lsp) - ms(h)))
            .collect::<Vec<_>>(),
    );
    summary(
        "adapter overhead - debounce",
        &mut http
            .iter()
            .filter_map(|s| s.http.map(|h| ms(s.lsp) - ms(h) - debounce))
            .collect::<Vec<_>>(),
    );
    summary(
        "inside the adapter (handler start -> answer) - HTTP",
        &mut http
            .iter()
            .filter_map(|s| s.http.map(|h| ms(s.adapter_total) - ms(h)))
            .collect::<Vec<_>>(),
    );
}
