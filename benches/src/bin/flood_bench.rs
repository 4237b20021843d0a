//! One token floods the server with prompts just under the body limit while health
//! checks and another token's completions go on (the hardening issue's attack).
//! Prints health latency p50/p99/max, the other token's completion latencies, the
//! attacker's status counts and the server's RSS before and after.
//!
//! Usage: `flood_bench SOUFFLEUR_BIN MODEL_GGUF [SECONDS] [ATTACKERS]`

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into()
}

fn post(url: &str, token: &str, body: &str) -> u16 {
    match agent()
        .post(url)
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send(body)
    {
        Ok(mut r) => {
            let _ = r.body_mut().read_to_string();
            r.status().as_u16()
        }
        Err(_) => 0,
    }
}

fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn token(bin: &str, home: &std::path::Path, name: &str) -> Result<String> {
    let out = Command::new(bin)
        .args(["token", "create", "--name", name])
        .env("SOUFFLEUR_HOME", home)
        .output()?;
    if !out.status.success() {
        bail!("token create: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .context("no token")?
        .trim()
        .to_string())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(bin), Some(model)) = (args.get(1), args.get(2)) else {
        bail!("usage: flood_bench SOUFFLEUR_BIN MODEL_GGUF [SECONDS] [ATTACKERS]");
    };
    let seconds: u64 = args.get(3).map_or(Ok(20), |s| s.parse())?;
    let attackers: usize = args.get(4).map_or(Ok(24), |s| s.parse())?;
    let dir = tempfile::tempdir()?;
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join("models"))?;
    let model = std::fs::canonicalize(model)?;
    std::os::unix::fs::symlink(
        &model,
        home.join("models").join(model.file_name().context("name")?),
    )?;
    let attacker = token(bin, &home, "attacker")?;
    let other = token(bin, &home, "other")?;
    let mut child = Command::new(bin)
        .args(["serve", "--port", "0"])
        .env("SOUFFLEUR_HOME", &home)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .context("no URL in the banner")?
        .to_string();
    let pid = child.id();
    let rss_before = rss_mb(pid);
    let big = json!({"prompt": "a ".repeat(520_000), "max_tokens": 4}).to_string();
    let fair = json!({"prompt": "def add(a, b):", "max_tokens": 8, "temperature": 0}).to_string();
    let stop = AtomicBool::new(false);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (health, fair_lat, statuses) = std::thread::scope(|scope| {
        let flood: Vec<_> = (0..attackers)
            .map(|_| {
                scope.spawn(|| {
                    let mut seen = BTreeMap::<u16, usize>::new();
                    while Instant::now() < deadline {
                        *seen
                            .entry(post(&format!("{url}/v1/completions"), &attacker, &big))
                            .or_default() += 1;
                    }
                    seen
                })
            })
            .collect();
        let fair_thread = scope.spawn(|| {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let status = post(&format!("{url}/v1/completions"), &other, &fair);
                lat.push((t.elapsed(), status));
            }
            lat
        });
        let mut health = Vec::new();
        while Instant::now() < deadline {
            let t = Instant::now();
            let ok = agent()
                .get(format!("{url}/v1/health"))
                .call()
                .is_ok_and(|r| r.status() == 200);
            health.push((t.elapsed(), ok));
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut statuses = BTreeMap::<u16, usize>::new();
        for f in flood {
            for (k, v) in f.join().unwrap_or_default() {
                *statuses.entry(k).or_default() += v;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let fair_lat = fair_thread.join().unwrap_or_default();
        (health, fair_lat, statuses)
    });
    let rss_after = rss_mb(pid);
    let _ = child.kill();
    let _ = child.wait();
    let mut h: Vec<Duration> = health.iter().map(|(d, _)| *d).collect();
    h.sort();
    let failed = health.iter().filter(|(_, ok)| !ok).count();
    let mut f: Vec<Duration> = fair_lat.iter().map(|(d, _)| *d).collect();
    f.sort();
    let fair_ok = fair_lat.iter().filter(|(_, s)| *s == 200).count();
    println!("flood: {attackers} clients of one token, ~1 MiB prompts, {seconds} s");
    println!("attacker statuses: {statuses:?}");
    println!(
        "health: {} checks, {failed} failed, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        h.len(),
        percentile(&h, 0.5),
        percentile(&h, 0.99),
        percentile(&h, 1.0)
    );
    println!(
        "other token: {} completions ({fair_ok} ok), p50 {:.0} ms, p99 {:.0} ms",
        f.len(),
        percentile(&f, 0.5),
        percentile(&f, 0.99)
    );
    println!(
        "server RSS: {:.0} MB before, {:.0} MB after",
        rss_before.unwrap_or(f64::NAN),
        rss_after.unwrap_or(f64::NAN)
    );
    Ok(())
}
