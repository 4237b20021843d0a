//! Load generator for `souffleur serve` (issue 4): simulated developers typing in
//! real files of an indexed repository, one Tabby completion request per keystroke.
//!
//! For each concurrency level the binary starts a fresh server (so peak RSS is per
//! level) and lets the clients type through a warm-up, then through a measurement
//! window of fixed duration, without a pause between the two. The warm-up lasts
//! until every client has had a response, because a cold server first meets all of
//! them at once. The requests started in the window are measured, and the counters
//! are read at its start while the clients keep typing. At the end the binary waits
//! for the requests in flight and stops the server.
//!
//! Each simulated client picks a random source file of the corpus and a cursor
//! position inside a function body. Either the cursor is at the start of a line's
//! code (the developer writes that line anew: the rest of the line is removed) or in
//! the middle of a line (the developer inserts text there: the next 5–15 characters
//! are removed). The client sends one request with the cursor there, then "types"
//! the removed characters back one at a time. It sends one request per keystroke,
//! waits for each response (an editor that debounces), and pauses 80–200 ms before
//! the next key. Then it moves to another file and position. Everything random
//! comes from a seeded generator, so a run is reproducible up to timing.
//!
//! Usage: `load_gen --souffleur BIN --home DIR --corpus REPO --tokens FILE
//! [--levels 1,4,16] [--warmup SECS] [--max-warmup SECS] [--duration SECS] [--seed N]
//! [--json FILE] [--trace FILE]`. The warm-up lasts `--warmup` seconds (default 10)
//! and until every client has had a response, at most `--max-warmup` (default 240).
//! `--home` is the `SOUFFLEUR_HOME` the server runs with (model, index, tokens);
//! `--corpus` is the indexed repository (its `.rs` files are sampled); `--tokens`
//! holds one API token per line: client `i` uses line `i % n`, and `/metrics` is
//! read with the first line, which must be an admin token. `--trace` writes one JSON
//! line per measured request (client, file, cursor, keystroke, latency, completion).
//! `benches/load_bench.sh` prepares all of this and runs it.

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use server::completion::postprocess::{self, Mode};

/// Characters of the text before the cursor sent with a request.
const PREFIX_CHARS: usize = 3000;
/// Characters of the text after the cursor sent with a request.
const SUFFIX_CHARS: usize = 1000;

struct Args {
    souffleur: PathBuf,
    home: PathBuf,
    corpus: PathBuf,
    tokens: PathBuf,
    levels: Vec<usize>,
    warmup: Duration,
    max_warmup: Duration,
    duration: Duration,
    seed: u64,
    json: Option<PathBuf>,
    trace: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut souffleur = None;
    let mut home = None;
    let mut corpus = None;
    let mut tokens = None;
    let mut levels = vec![1, 4, 16];
    let mut warmup = Duration::from_secs(10);
    let mut max_warmup = Duration::from_secs(240);
    let mut duration = Duration::from_secs(60);
    let mut seed = 42;
    let mut json = None;
    let mut trace = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--souffleur" => souffleur = Some(PathBuf::from(value()?)),
            "--home" => home = Some(PathBuf::from(value()?)),
            "--corpus" => corpus = Some(PathBuf::from(value()?)),
            "--tokens" => tokens = Some(PathBuf::from(value()?)),
            "--levels" => {
                levels = value()?
                    .split(',')
                    .map(|s| s.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .context("--levels takes a comma-separated list of client counts")?;
            }
            "--warmup" => warmup = Duration::from_secs_f64(value()?.parse()?),
            "--max-warmup" => max_warmup = Duration::from_secs_f64(value()?.parse()?),
            "--duration" => duration = Duration::from_secs_f64(value()?.parse()?),
            "--seed" => seed = value()?.parse()?,
            "--json" => json = Some(PathBuf::from(value()?)),
            "--trace" => trace = Some(PathBuf::from(value()?)),
            other => bail!("unknown argument {other}"),
        }
    }
    let usage = "usage: load_gen --souffleur BIN --home DIR --corpus REPO --tokens FILE \
                 [--levels 1,4,16] [--warmup SECS] [--max-warmup SECS] [--duration SECS] [--seed N] \
                 [--json FILE] [--trace FILE]";
    let (Some(souffleur), Some(home), Some(corpus), Some(tokens)) =
        (souffleur, home, corpus, tokens)
    else {
        bail!(usage);
    };
    if levels.is_empty() || levels.contains(&0) {
        bail!("--levels must list client counts of at least 1");
    }
    Ok(Args {
        souffleur,
        home,
        corpus,
        tokens,
        levels,
        warmup,
        max_warmup,
        duration,
        seed,
        json,
        trace,
    })
}

/// SplitMix64: small, seeded, good enough to pick files and pauses.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    /// Uniform index below `n` (n > 0).
    fn index(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// A line of a function body where typing can start: byte offsets of the first
/// non-blank character and of the end of the line (its `\n` or the end of the file).
#[derive(Clone, Copy)]
struct Site {
    content_start: usize,
    line_end: usize,
}

/// One source file of the corpus.
struct SourceFile {
    /// Absolute path, as an editor would send it.
    path: String,
    text: String,
    sites: Vec<Site>,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn is_fn_start(trimmed: &str) -> bool {
    !trimmed.starts_with("//")
        && (trimmed.starts_with("fn ") || trimmed.contains(" fn "))
        && !trimmed.ends_with(';')
}

/// Lines inside function bodies, found by indentation: a body runs from the line
/// after the signature's `{` to the first `}` at the signature's indentation.
fn body_sites(text: &str) -> Vec<Site> {
    let mut lines = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let content = line.strip_suffix('\n').unwrap_or(line);
        let content = content.strip_suffix('\r').unwrap_or(content);
        lines.push((offset, content));
        offset += line.len();
    }
    let mut in_body = vec![false; lines.len()];
    let mut i = 0;
    while i < lines.len() {
        let (_, line) = lines[i];
        if !is_fn_start(line.trim()) {
            i += 1;
            continue;
        }
        let fn_indent = indent(line);
        // The signature may span lines; the body opens where a line ends with `{`.
        let Some(open) = (i..lines.len().min(i + 12)).find(|&j| {
            lines[j].1.trim_end().ends_with('{') || lines[j].1.trim_end().ends_with(';')
        }) else {
            i += 1;
            continue;
        };
        if !lines[open].1.trim_end().ends_with('{') {
            i = open + 1;
            continue;
        }
        let close = (open + 1..lines.len())
            .find(|&j| indent(lines[j].1) == fn_indent && lines[j].1.trim_start().starts_with('}'));
        let Some(close) = close else {
            i += 1;
            continue;
        };
        for flag in &mut in_body[open + 1..close] {
            *flag = true;
        }
        i = open + 1;
    }
    lines
        .iter()
        .zip(&in_body)
        .filter(|(_, inside)| **inside)
        .filter_map(|(&(start, line), _)| {
            let trimmed = line.trim();
            if trimmed.chars().count() < 6 || trimmed.starts_with("//") {
                return None;
            }
            Some(Site {
                content_start: start + indent(line),
                line_end: start + line.trim_end().len(),
            })
        })
        .collect()
}

/// The `.rs` files of `root` (skipping `.git` and `target`) that have function bodies.
fn load_corpus(root: &Path) -> Result<Vec<SourceFile>> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                if entry.file_name() != ".git" && entry.file_name() != "target" {
                    stack.push(path);
                }
            } else if kind.is_file() && path.extension().is_some_and(|e| e == "rs") {
                let Ok(text) = std::fs::read_to_string(&path) else {
                    continue;
                };
                let sites = body_sites(&text);
                if !sites.is_empty() {
                    files.push(SourceFile {
                        path: path.to_string_lossy().into_owned(),
                        text,
                        sites,
                    });
                }
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    if files.is_empty() {
        bail!(
            "no Rust files with function bodies under {}",
            root.display()
        );
    }
    Ok(files)
}

/// The last `max` bytes of `s`, moved forward to a character boundary.
fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// The first `max` bytes of `s`, moved back to a character boundary.
fn head(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The benchmark's definition: there is non-blank text after the cursor on its line,
/// or the cursor's line has non-blank text before it.
fn is_single_line(prefix: &str, suffix: &str) -> bool {
    let after = suffix.split('\n').next().unwrap_or("");
    let before = prefix.rsplit('\n').next().unwrap_or("");
    !after.trim().is_empty() || !before.trim().is_empty()
}

/// One request's outcome.
struct Sample {
    latency_ms: f64,
    /// `None` when the server answered 200.
    error: Option<String>,
    single_line: bool,
    /// The server's own rule ([`postprocess::mode`]) makes it a single-line request, so
    /// the report can also split requests the way the server budgets them (32 new
    /// tokens and a stop at the newline for single-line, 96 tokens for a block).
    server_single_line: bool,
    /// Not the first request of a typing run: the previous keystroke's prompt was just served.
    warm: bool,
    /// The response had a non-empty completion.
    shown: bool,
    /// The completion starts with the next characters the developer actually types.
    matches_next: bool,
    /// Started inside the measurement window (after the warm-up).
    measured: bool,
    /// When the response arrived, from the start of the run.
    finished: Duration,
    /// One JSON line describing the request, for `--trace`.
    trace: Value,
}

/// What every client of a phase reads.
struct Shared {
    url: String,
    tokens: Arc<Vec<String>>,
    corpus: Arc<Vec<SourceFile>>,
}

/// The measurement window of one level: it opens when the warm-up ends, which the
/// main thread decides while the clients type, and closes `duration` later.
struct Window {
    run_start: Instant,
    opened: OnceLock<Instant>,
    duration: Duration,
    /// Clients that have had at least one response.
    warmed: AtomicUsize,
}

impl Window {
    fn deadline(&self) -> Option<Instant> {
        self.opened.get().map(|&o| o + self.duration)
    }

    fn open(&self) -> bool {
        self.deadline().is_none_or(|d| Instant::now() < d)
    }

    /// Sleeps `d`, or less if the window closes sooner.
    fn sleep(&self, d: Duration) {
        let d = match self.deadline() {
            Some(end) => d.min(end.saturating_duration_since(Instant::now())),
            None => d,
        };
        std::thread::sleep(d);
    }

    fn measures(&self, started: Instant) -> bool {
        self.opened.get().is_some_and(|&o| started >= o)
    }
}

fn send(agent: &ureq::Agent, url: &str, token: &str, body: &str) -> Result<(u16, String)> {
    let mut resp = agent
        .post(url)
        .header("Authorization", &format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send(body)?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string()?;
    Ok((status, text))
}

/// One simulated developer: starts within the first second of the run and types
/// until the measurement window closes.
fn client(shared: &Shared, window: &Window, id: usize, seed: u64) -> Vec<Sample> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    let url = format!("{}/v1/completions", shared.url);
    let token = &shared.tokens[id % shared.tokens.len()];
    let user = format!("client-{id}");
    let mut rng = Rng::new(seed);
    let mut samples = Vec::new();
    // Editors do not all open at the same millisecond.
    window.sleep(Duration::from_millis(rng.range(0, 1000) as u64));
    while window.open() {
        let file = &shared.corpus[rng.index(shared.corpus.len())];
        let site = file.sites[rng.index(file.sites.len())];
        let text = &file.text;
        let line = &text[site.content_start..site.line_end];
        // Byte offsets of the characters of the line's code, and its end.
        let mut bounds: Vec<usize> = line
            .char_indices()
            .map(|(i, _)| site.content_start + i)
            .collect();
        bounds.push(site.line_end);
        let chars = bounds.len() - 1;
        let want = rng.range(5, 15);
        let (start_idx, removed_end) = if rng.chance(0.4) || chars <= 5 {
            // Writing the line anew: everything after the cursor on this line is gone.
            (0, site.line_end)
        } else {
            let start = rng.range(1, chars - 5);
            (start, bounds[(start + want).min(chars)])
        };
        let typed = want.min(chars - start_idx);
        let suffix_full = &text[removed_end..];
        for k in 0..=typed {
            if !window.open() {
                break;
            }
            let cursor = bounds[start_idx + k];
            let prefix = tail(&text[..cursor], PREFIX_CHARS);
            let suffix = head(suffix_full, SUFFIX_CHARS);
            let next_true = &text[cursor..bounds[start_idx + typed]];
            let body = json!({
                "language": "rust",
                "user": user,
                "segments": {
                    "prefix": prefix,
                    "suffix": suffix,
                    "filepath": file.path,
                    "git_url": "",
                },
            })
            .to_string();
            let started = Instant::now();
            let result = send(&agent, &url, token, &body);
            let latency_ms = started.elapsed().as_secs_f64() * 1e3;
            if samples.is_empty() {
                window.warmed.fetch_add(1, Ordering::Relaxed);
            }
            let measured = window.measures(started);
            let (error, completion) = match result {
                Ok((200, body)) => {
                    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    let text = v["choices"][0]["text"].as_str().map(str::to_string);
                    (None, text)
                }
                Ok((status, body)) => (Some(format!("HTTP {status}: {}", head(&body, 200))), None),
                Err(e) => (Some(format!("transport: {e}")), None),
            };
            let shown = completion.as_deref().is_some_and(|t| !t.trim().is_empty());
            let matches_next = !next_true.is_empty()
                && completion.as_deref().is_some_and(|t| {
                    t.starts_with(next_true) || (!t.is_empty() && next_true.starts_with(t))
                });
            let single_line = is_single_line(prefix, suffix);
            let trace = json!({
                "client": id,
                "at_s": started.duration_since(window.run_start).as_secs_f64(),
                "measured": measured,
                "file": file.path,
                "cursor": cursor,
                "keystroke": k,
                "single_line": single_line,
                "latency_ms": latency_ms,
                "error": error,
                "completion": completion,
            });
            samples.push(Sample {
                latency_ms,
                error,
                single_line,
                server_single_line: postprocess::mode(prefix, suffix) == Mode::SingleLine,
                warm: k > 0,
                measured,
                finished: started.duration_since(window.run_start)
                    + Duration::from_secs_f64(latency_ms / 1e3),
                shown,
                matches_next,
                trace,
            });
            // Time to the next keystroke.
            window.sleep(Duration::from_millis(rng.range(80, 200) as u64));
        }
        // Moving to another file and reading a little before typing again.
        window.sleep(Duration::from_millis(rng.range(300, 800) as u64));
    }
    samples
}

/// Runs `clients` simulated developers through a warm-up and then a measurement
/// window without a pause between them (clients keep typing across the boundary).
/// The warm-up lasts at least `warmup` and until every client has had a response
/// (a cold server first meets all of them at once), but at most `max_warmup`;
/// `at_boundary` runs when it ends. Returns every request's sample, the start of the
/// run and the opening of the window.
fn run_clients(
    shared: &Arc<Shared>,
    clients: usize,
    seed: u64,
    warmup: Duration,
    max_warmup: Duration,
    duration: Duration,
    at_boundary: impl FnOnce(),
) -> Result<(Vec<Sample>, Instant, Instant)> {
    let window = Arc::new(Window {
        run_start: Instant::now(),
        opened: OnceLock::new(),
        duration,
        warmed: AtomicUsize::new(0),
    });
    let handles: Vec<_> = (0..clients)
        .map(|id| {
            let shared = shared.clone();
            let window = window.clone();
            let client_seed = seed ^ (id as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F);
            std::thread::spawn(move || client(&shared, &window, id, client_seed))
        })
        .collect();
    loop {
        let elapsed = window.run_start.elapsed();
        let all_warm = window.warmed.load(Ordering::Relaxed) >= clients;
        if (elapsed >= warmup && all_warm) || elapsed >= max_warmup {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    at_boundary();
    let opened = Instant::now();
    window
        .opened
        .set(opened)
        .map_err(|_| anyhow::anyhow!("measurement window opened twice"))?;
    let mut samples = Vec::new();
    for h in handles {
        match h.join() {
            Ok(s) => samples.extend(s),
            Err(_) => eprintln!("load_gen: a client thread panicked"),
        }
    }
    Ok((samples, window.run_start, opened))
}

/// A running `souffleur serve`; stopped by closing its standard input.
struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    url: String,
}

impl Server {
    fn start(bin: &Path, home: &Path) -> Result<Self> {
        let mut child = Command::new(bin)
            .args(["serve", "--port", "0", "--exit-on-stdin-close"])
            .env("SOUFFLEUR_HOME", home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let Some(url) = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .map(str::to_string)
        else {
            let _ = child.kill();
            let status = child.wait()?;
            bail!("the server did not print its address (got {line:?}, exit {status})");
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink);
        });
        Ok(Self { child, stdin, url })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) -> Result<()> {
        drop(self.stdin.take());
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

/// A field of `/proc/<pid>/status` in kB.
fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU time (user + system) of a process, in seconds (ticks of 1/100 s).
fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// CPU time of this process (the load generator), in seconds.
fn self_cpu_secs() -> Option<f64> {
    proc_cpu_secs(std::process::id())
}

/// CPU time all processes of the machine have used so far (busy time of every core
/// from the first line of `/proc/stat`), in seconds.
fn machine_busy_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| fields.get(i).copied().unwrap_or(0.0))
        .sum::<f64>();
    Some(busy / 100.0)
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The unlabelled series of `/metrics`.
fn metrics(url: &str, admin_token: &str) -> Result<HashMap<String, f64>> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut resp = agent
        .get(&format!("{url}/metrics"))
        .header("Authorization", &format!("Bearer {admin_token}"))
        .call()?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string()?;
    if status != 200 {
        bail!("GET /metrics answered {status}: {}", head(&text, 200));
    }
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.contains('{'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.trim().to_string(), value.trim().parse().ok()?))
        })
        .collect())
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    Some(sorted[i])
}

fn latencies<'a>(samples: impl Iterator<Item = &'a Sample>) -> Vec<f64> {
    let mut v: Vec<f64> = samples.map(|s| s.latency_ms).collect();
    v.sort_by(f64::total_cmp);
    v
}

fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, name: &str) -> f64 {
    after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)
}

fn ratio(num: f64, den: f64) -> Option<f64> {
    (den > 0.0).then(|| num / den)
}

fn latency_json(sorted: &[f64]) -> Value {
    json!({
        "count": sorted.len(),
        "p50_ms": percentile(sorted, 0.5),
        "p95_ms": percentile(sorted, 0.95),
        "p99_ms": percentile(sorted, 0.99),
        "max_ms": sorted.last(),
    })
}

/// Runs one concurrency level against a fresh server; returns its JSON report.
fn run_level(
    args: &Args,
    corpus: &Arc<Vec<SourceFile>>,
    tokens: &Arc<Vec<String>>,
    clients: usize,
    trace: &mut Option<std::io::BufWriter<std::fs::File>>,
) -> Result<Value> {
    let server = Server::start(&args.souffleur, &args.home)?;
    let pid = server.pid();
    let shared = Arc::new(Shared {
        url: server.url.clone(),
        tokens: tokens.clone(),
        corpus: corpus.clone(),
    });
    let load_before = load_average();
    eprintln!(
        "load_gen: {clients} client(s): server pid {pid} at {}, warm-up at least {:.0} s and until every client has had a response, then {:.0} s measured (load average {load_before:.2})",
        server.url,
        args.warmup.as_secs_f64(),
        args.duration.as_secs_f64()
    );
    let level_seed = args.seed ^ (clients as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // Counters at the end of the warm-up, read while the clients keep typing.
    let mut at_boundary = None;
    let (all_samples, run_start, measure_from) = run_clients(
        &shared,
        clients,
        level_seed,
        args.warmup,
        args.max_warmup,
        args.duration,
        || {
            at_boundary = Some((
                metrics(&server.url, &tokens[0]),
                proc_cpu_secs(pid),
                self_cpu_secs(),
                machine_busy_secs(),
            ));
        },
    )?;
    let warmup_s = (measure_from - run_start).as_secs_f64();
    let (m0, cpu0, self0, busy0) = at_boundary.context("warm-up boundary not reached")?;
    let m0 = m0?;
    let (samples, warm): (Vec<Sample>, Vec<Sample>) =
        all_samples.into_iter().partition(|s| s.measured);
    eprintln!(
        "load_gen:   warm-up: {warmup_s:.1} s, {} requests, {} errors",
        warm.len(),
        warm.iter().filter(|s| s.error.is_some()).count()
    );
    // From the start of the window to the last response of a request started in it.
    let wall = samples
        .iter()
        .map(|s| s.finished)
        .max()
        .map_or(args.duration, |f| {
            f.saturating_sub(measure_from - run_start)
        })
        .as_secs_f64();
    let cpu1 = proc_cpu_secs(pid);
    let self1 = self_cpu_secs();
    let busy1 = machine_busy_secs();
    let m1 = metrics(&server.url, &tokens[0])?;
    let peak_rss_kb = proc_status_kb(pid, "VmHWM:");
    let end_rss_kb = proc_status_kb(pid, "VmRSS:");
    let load_after = load_average();
    server.stop()?;
    if let Some(out) = trace.as_mut() {
        for s in &samples {
            let mut line = s.trace.clone();
            line["clients"] = json!(clients);
            writeln!(out, "{line}")?;
        }
    }

    let ok: Vec<&Sample> = samples.iter().filter(|s| s.error.is_none()).collect();
    let mut error_kinds: BTreeMap<String, usize> = BTreeMap::new();
    for s in &samples {
        if let Some(e) = &s.error {
            *error_kinds.entry(head(e, 120).to_string()).or_default() += 1;
        }
    }
    let all = latencies(ok.iter().copied());
    let single = latencies(ok.iter().copied().filter(|s| s.single_line));
    let single_warm = latencies(ok.iter().copied().filter(|s| s.single_line && s.warm));
    let multi = latencies(ok.iter().copied().filter(|s| !s.single_line));
    let server_single = latencies(ok.iter().copied().filter(|s| s.server_single_line));
    let server_multi = latencies(ok.iter().copied().filter(|s| !s.server_single_line));
    let n = samples.len();
    let frac = |k: usize| ratio(k as f64, n as f64);
    let hits = delta(&m0, &m1, "souffleur_prefix_cache_hits_total");
    let lookups = delta(&m0, &m1, "souffleur_prefix_cache_lookups_total");
    // The engine counts prompt tokens it prefilled, and separately those whose
    // key/value state it took from the prefix cache instead.
    let prefilled_tokens = delta(&m0, &m1, "souffleur_prompt_tokens_total");
    let reused_tokens = delta(&m0, &m1, "souffleur_reused_prompt_tokens_total");
    let generated = delta(&m0, &m1, "souffleur_generated_tokens_total");
    let drafted = delta(&m0, &m1, "souffleur_drafted_tokens_total");
    let accepted = delta(&m0, &m1, "souffleur_accepted_draft_tokens_total");
    let server_cpu = cpu0.zip(cpu1).map(|(a, b)| b - a);
    let self_cpu = self0.zip(self1).map(|(a, b)| b - a);
    let machine_cpu = busy0.zip(busy1).map(|(a, b)| b - a);
    // CPU time of everything else on the machine during the phase (other users' work).
    let other_cpu = machine_cpu
        .zip(server_cpu.zip(self_cpu))
        .map(|(m, (s, c))| (m - s - c).max(0.0));
    eprintln!(
        "load_gen:   measured: {n} requests in {wall:.1} s; CPU: server {:.1} s, load_gen {:.1} s, other processes {:.1} s ({:.2} cores)",
        server_cpu.unwrap_or(0.0),
        self_cpu.unwrap_or(0.0),
        other_cpu.unwrap_or(0.0),
        other_cpu.unwrap_or(0.0) / wall
    );
    Ok(json!({
        "clients": clients,
        "warmup_s": warmup_s,
        "duration_s": wall,
        "requests": n,
        "errors": n - ok.len(),
        "error_kinds": error_kinds,
        "throughput_req_s": n as f64 / wall,
        "latency": latency_json(&all),
        "single_line_fraction": frac(samples.iter().filter(|s| s.single_line).count()),
        "single_line": latency_json(&single),
        "single_line_warm_prefix": latency_json(&single_warm),
        "multi_line": latency_json(&multi),
        "server_mode_single_line_fraction": frac(samples.iter().filter(|s| s.server_single_line).count()),
        "server_mode_single_line": latency_json(&server_single),
        "server_mode_multi_line": latency_json(&server_multi),
        "shown_fraction": ratio(ok.iter().filter(|s| s.shown).count() as f64, ok.len() as f64),
        "matches_next_chars_fraction": ratio(ok.iter().filter(|s| s.matches_next).count() as f64, ok.len() as f64),
        "prefix_cache": {
            "lookups": lookups,
            "hits": hits,
            "hit_ratio": ratio(hits, lookups),
        },
        "prefilled_prompt_tokens": prefilled_tokens,
        "reused_prompt_tokens": reused_tokens,
        "reused_prompt_token_fraction": ratio(reused_tokens, reused_tokens + prefilled_tokens),
        "generated_tokens": generated,
        "speculation": {
            "drafted_tokens": drafted,
            "accepted_tokens": accepted,
            "acceptance": ratio(accepted, drafted),
        },
        "server_cpu_s": server_cpu,
        "server_cpu_ms_per_request": server_cpu.and_then(|c| ratio(c * 1e3, n as f64)),
        "load_gen_cpu_s": self_cpu,
        "machine_busy_cpu_s": machine_cpu,
        "other_processes_cpu_s": other_cpu,
        "other_processes_cores": other_cpu.map(|c| c / wall),
        "server_peak_rss_mb": peak_rss_kb.map(|kb| kb as f64 / 1024.0),
        "server_rss_after_mb": end_rss_kb.map(|kb| kb as f64 / 1024.0),
        "load_average_before": load_before,
        "load_average_after": load_after,
    }))
}

fn fmt_ms(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".to_string(), |x| format!("{x:.0}"))
}

fn fmt_frac(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".to_string(), |x| format!("{:.1} %", x * 100.0))
}

fn print_table(levels: &[Value]) {
    println!(
        "| clients | requests | errors | req/s | p50 ms | p95 ms | p99 ms | single-line | single-line p50 / p99 ms | same, warm prefix p50 / p99 ms | prefix-cache hit ratio | prompt tokens reused | server peak RSS MB | server RSS after MB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for l in levels {
        println!(
            "| {} | {} | {} | {:.2} | {} | {} | {} | {} | {} / {} | {} / {} | {} | {} | {} | {} |",
            l["clients"],
            l["requests"],
            l["errors"],
            l["throughput_req_s"].as_f64().unwrap_or(0.0),
            fmt_ms(&l["latency"]["p50_ms"]),
            fmt_ms(&l["latency"]["p95_ms"]),
            fmt_ms(&l["latency"]["p99_ms"]),
            fmt_frac(&l["single_line_fraction"]),
            fmt_ms(&l["single_line"]["p50_ms"]),
            fmt_ms(&l["single_line"]["p99_ms"]),
            fmt_ms(&l["single_line_warm_prefix"]["p50_ms"]),
            fmt_ms(&l["single_line_warm_prefix"]["p99_ms"]),
            fmt_frac(&l["prefix_cache"]["hit_ratio"]),
            fmt_frac(&l["reused_prompt_token_fraction"]),
            fmt_ms(&l["server_peak_rss_mb"]),
            fmt_ms(&l["server_rss_after_mb"]),
        );
    }
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let tokens: Vec<String> = std::fs::read_to_string(&args.tokens)
        .with_context(|| format!("cannot read {}", args.tokens.display()))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if tokens.is_empty() {
        bail!("{} holds no tokens", args.tokens.display());
    }
    let corpus_root = std::fs::canonicalize(&args.corpus)
        .with_context(|| format!("cannot resolve {}", args.corpus.display()))?;
    let corpus = load_corpus(&corpus_root)?;
    let sites: usize = corpus.iter().map(|f| f.sites.len()).sum();
    eprintln!(
        "load_gen: corpus {}: {} files, {sites} lines in function bodies",
        corpus_root.display(),
        corpus.len()
    );
    let corpus = Arc::new(corpus);
    let tokens = Arc::new(tokens);
    let mut trace = match &args.trace {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => None,
    };
    let mut levels = Vec::new();
    for &clients in &args.levels {
        levels.push(run_level(&args, &corpus, &tokens, clients, &mut trace)?);
    }
    if let Some(mut out) = trace {
        out.flush()?;
    }
    print_table(&levels);
    let threshold = |l: &Value, key: &str, p: &str| l[key][p].as_f64();
    if let Some(one) = levels.iter().find(|l| l["clients"] == 1) {
        let p50 = threshold(one, "single_line_warm_prefix", "p50_ms");
        let p99 = threshold(one, "single_line_warm_prefix", "p99_ms");
        let met = p50.is_some_and(|x| x < 150.0) && p99.is_some_and(|x| x < 400.0);
        println!(
            "target single-line p50 < 150 ms and p99 < 400 ms at 1 client, warm prefix: {} (p50 {}, p99 {})",
            if met { "met" } else { "NOT met" },
            fmt_ms(&json!(p50)),
            fmt_ms(&json!(p99)),
        );
    }
    if let Some(many) = levels.iter().find(|l| l["clients"] == 16) {
        let errors = many["errors"].as_u64().unwrap_or(u64::MAX);
        println!(
            "target no errors at 16 clients: {} ({errors} errors)",
            if errors == 0 { "met" } else { "NOT met" }
        );
    }
    let report = json!({
        "bench": "load_gen",
        "corpus": corpus_root,
        "corpus_files": corpus.len(),
        "corpus_sites": sites,
        "seed": args.seed,
        "min_warmup_s": args.warmup.as_secs_f64(),
        "max_warmup_s": args.max_warmup.as_secs_f64(),
        "duration_s": args.duration.as_secs_f64(),
        "prefix_chars": PREFIX_CHARS,
        "suffix_chars": SUFFIX_CHARS,
        "machine_cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "levels": levels,
    });
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("load_gen: wrote {}", path.display());
    }
    Ok(())
}
