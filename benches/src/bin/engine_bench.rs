//! Engine benchmark: time to first token and prefill speed for a 512-token prompt,
//! decode speed at batch 1, aggregate speed at 8 concurrent requests, the time of a
//! keystroke (64 tokens after an edit computed again over 448 cached ones, then 8
//! decoded), peak RSS.
//! Prints one JSON object; `benches/engine_bench.sh` runs it beside llama.cpp.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use engine::{Engine, GenerationRequest, Model, SchedulerConfig};

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// A greedy request without speculation, as llama.cpp decodes (the apples-to-apples run).
fn plain(prompt: Vec<u32>, n: usize) -> GenerationRequest {
    let mut req = GenerationRequest::greedy(prompt, n);
    req.speculation = engine::Speculation::Off;
    req
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let model_path = PathBuf::from(
        args.next()
            .context("usage: engine_bench MODEL PROMPT_FILE [RUNS]")?,
    );
    let prompt_file = PathBuf::from(args.next().context("missing PROMPT_FILE")?);
    let runs: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(5);
    let text = std::fs::read_to_string(&prompt_file)?;
    let model = Arc::new(Model::load(&model_path)?);
    let all = model.tokenizer().encode(&text)?;
    if all.len() < 512 {
        bail!("prompt file has only {} tokens, need 512", all.len());
    }
    let prompt: Vec<u32> = all[..512].to_vec();
    // No prefix cache: every run computes its whole prompt, as llama.cpp does here.
    let engine = Engine::start(
        model.clone(),
        SchedulerConfig {
            prefix_cache_bytes: 0,
            ..SchedulerConfig::default()
        },
    )?;
    // Warm-up.
    engine.generate(plain(prompt[..64].to_vec(), 4))?;

    let mut ttft = Vec::new();
    for _ in 0..runs {
        let out = engine.generate(plain(prompt.clone(), 1))?;
        ttft.push(out.stats.time_to_first_token.as_secs_f64() * 1e3);
    }
    ttft.sort_by(f64::total_cmp);
    let ttft_p50 = percentile(&ttft, 0.5);

    let decode_tokens = 128;
    let mut decode_rates = Vec::new();
    for _ in 0..runs.min(3) {
        let mut req = plain(prompt[..128].to_vec(), decode_tokens);
        req.stop.clear();
        let out = engine.generate(req)?;
        let decode = out.stats.total_time - out.stats.time_to_first_token;
        decode_rates
            .push(out.stats.generated_tokens.saturating_sub(1) as f64 / decode.as_secs_f64());
    }
    decode_rates.sort_by(f64::total_cmp);

    let concurrent = 8;
    let start = Instant::now();
    let handles: Vec<_> = (0..concurrent)
        .map(|i| {
            let engine = engine.clone();
            let p = prompt[i * 16..i * 16 + 128].to_vec();
            std::thread::spawn(move || engine.generate(plain(p, decode_tokens)))
        })
        .collect();
    let mut total_tokens = 0;
    for h in handles {
        let out = h.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
        total_tokens += out.stats.generated_tokens;
    }
    let aggregate = total_tokens as f64 / start.elapsed().as_secs_f64();

    // A keystroke in an editor: the first 448 tokens are cached from the previous
    // request, the 64 from an edit on are computed again, then 8 tokens are decoded
    // (plain decoding). Each request edits differently, so none finds its own tail.
    let keyed = Engine::start(model.clone(), SchedulerConfig::default())?;
    keyed.generate(plain(prompt.clone(), 1))?;
    let (mut keystroke, mut keystroke_prefill) = (Vec::new(), Vec::new());
    for i in 0..runs * 2 {
        let mut p = prompt.clone();
        p[448] = 1000 + i as u32;
        let mut req = plain(p, 8);
        req.stop.clear();
        let out = keyed.generate(req)?;
        keystroke.push(out.stats.total_time.as_secs_f64() * 1e3);
        keystroke_prefill.push(out.stats.time_to_first_token.as_secs_f64() * 1e3);
    }
    keystroke.sort_by(f64::total_cmp);
    keystroke_prefill.sort_by(f64::total_cmp);

    let result = serde_json::json!({
        "engine": "souffleur",
        "model_sha256": model.info().sha256,
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "prompt_tokens": 512,
        "ttft_ms_p50": ttft_p50,
        "ttft_ms_p99": percentile(&ttft, 0.99),
        "prefill_tok_s": 512.0 / (ttft_p50 / 1e3),
        "decode_tok_s_batch1": percentile(&decode_rates, 0.5),
        "aggregate_tok_s_8_concurrent": aggregate,
        "keystroke_ms_p50": percentile(&keystroke, 0.5),
        "keystroke_first_token_ms_p50": percentile(&keystroke_prefill, 0.5),
        "peak_rss_mb": peak_rss_mb(),
    });
    println!("{result}");
    Ok(())
}
