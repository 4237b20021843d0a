//! Benchmark of the code index (issue 3): full index, incremental sync,
//! retrieval latency, peak RSS and index size, on git repositories that
//! `benches/index_bench.sh` prepares from real code.
//!
//! Usage: `index_bench --index DIR --repo NAME=PATH [--repo NAME=PATH ...]
//! [--queries N] [--changed N] [--json FILE]`. The index directory is
//! deleted first. The first repository gets the incremental-sync test: N
//! files are changed and committed, then synced.

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use git2::{ObjectType, Repository, Signature, TreeWalkMode, TreeWalkResult};
use indexer::{
    CodeIndex, Indexer, IndexerConfig, Language, ProgressEvent, RepoSpec, RetrievalRequest,
    SyncReport,
};

struct Args {
    index: PathBuf,
    repos: Vec<(String, PathBuf)>,
    queries: usize,
    changed: usize,
    json: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        index: PathBuf::new(),
        repos: Vec::new(),
        queries: 2000,
        changed: 10,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--index" => args.index = PathBuf::from(value()?),
            "--repo" => {
                let v = value()?;
                let (name, path) = v.split_once('=').context("--repo takes NAME=PATH")?;
                args.repos.push((name.to_string(), PathBuf::from(path)));
            }
            "--queries" => args.queries = value()?.parse()?,
            "--changed" => args.changed = value()?.parse()?,
            "--json" => args.json = Some(PathBuf::from(value()?)),
            other => bail!("unknown argument {other}"),
        }
    }
    if args.index.as_os_str().is_empty() || args.repos.is_empty() {
        bail!(
            "usage: index_bench --index DIR --repo NAME=PATH [--repo ...] [--queries N] [--changed N] [--json FILE]"
        );
    }
    Ok(args)
}

/// Peak resident set size of this process, in bytes (VmHWM).
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// CPU time (user + system) this process has used so far, in seconds.
fn cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime
            // are the 14th and 15th fields of the whole line, in ticks of 1/100 s.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

/// The 1-minute load average when the run started (other work on the machine).
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(entry.path()),
                Ok(t) if t.is_file() => total += entry.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}

/// Code files of a repository's HEAD: (path, content), sorted by path.
fn code_files(repo_path: &Path, max: usize) -> Result<Vec<(String, String)>> {
    let repo = Repository::open(repo_path)?;
    let tree = repo.head()?.peel_to_tree()?;
    let mut out = Vec::new();
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        if entry.kind() != Some(ObjectType::Blob) {
            return TreeWalkResult::Ok;
        }
        let Ok(name) = entry.name() else {
            return TreeWalkResult::Ok;
        };
        let path = format!("{dir}{name}");
        if path.contains("site-packages/") || path.contains("/vendor/") {
            return TreeWalkResult::Ok;
        }
        if matches!(
            Language::from_path(&path),
            None | Some(Language::Json) | Some(Language::Text)
        ) {
            return TreeWalkResult::Ok;
        }
        if let Ok(blob) = repo.find_blob(entry.id())
            && blob.size() < 200_000
            && let Ok(text) = std::str::from_utf8(blob.content())
            && text.lines().count() >= 30
            && !text.contains("DO NOT EDIT")
        {
            out.push((path, text.to_string()));
        }
        TreeWalkResult::Ok
    })?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    if out.len() > max {
        let step = out.len() / max;
        out = out.into_iter().step_by(step.max(1)).take(max).collect();
    }
    Ok(out)
}

/// Appends a comment to `n` code files and commits; returns their paths.
fn change_files(repo_path: &Path, n: usize) -> Result<Vec<String>> {
    let files = code_files(repo_path, n)?;
    let repo = Repository::open(repo_path)?;
    let workdir = repo.workdir().context("bare repository")?.to_path_buf();
    let mut index = repo.index()?;
    let mut changed = Vec::new();
    for (path, text) in files.into_iter().take(n) {
        let marker = match Language::from_path(&path) {
            Some(Language::Python | Language::Ruby | Language::Bash) => "#",
            _ => "//",
        };
        let new_text = format!(
            "{text}\n{marker} souffleur bench: changed {}\n",
            now_nanos()
        );
        std::fs::write(workdir.join(&path), new_text)?;
        index.add_path(Path::new(&path))?;
        changed.push(path);
    }
    index.write()?;
    let tree = repo.find_tree(index.write_tree()?)?;
    let sig = Signature::now("bench", "bench@localhost")?;
    let parent = repo.head()?.peel_to_commit()?;
    repo.commit(Some("HEAD"), &sig, &sig, "bench change", &tree, &[&parent])?;
    Ok(changed)
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// A deterministic pseudo-random sequence (LCG), so runs are comparable.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % bound.max(1)
    }
}

struct Sample {
    repo: String,
    path: String,
    prefix: String,
    suffix: String,
    cursor_line: u32,
}

fn make_samples(files: &[(String, String, String)], n: usize) -> Vec<Sample> {
    let mut rng = Lcg(42);
    let mut out = Vec::with_capacity(n);
    while out.len() < n && !files.is_empty() {
        let (repo, path, text) = &files[rng.next(files.len())];
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() < 10 {
            continue;
        }
        let l = 5 + rng.next(lines.len() - 6);
        let line = lines[l];
        let col = if line.is_empty() {
            0
        } else {
            let mut c = rng.next(line.len());
            while !line.is_char_boundary(c) {
                c -= 1;
            }
            c
        };
        let first = l.saturating_sub(60);
        let mut prefix = lines[first..l].join("\n");
        prefix.push('\n');
        prefix.push_str(&line[..col]);
        let last = (l + 21).min(lines.len());
        let mut suffix = line[col..].to_string();
        suffix.push('\n');
        suffix.push_str(&lines[l + 1..last].join("\n"));
        out.push(Sample {
            repo: repo.clone(),
            path: path.clone(),
            prefix,
            suffix,
            cursor_line: u32::try_from(l + 1).unwrap_or(u32::MAX),
        });
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn progress(event: &ProgressEvent) {
    match event {
        ProgressEvent::Started {
            repo,
            total_files,
            to_process,
            ..
        } => eprintln!("[{repo}] {total_files} candidate files, {to_process} to index"),
        ProgressEvent::Finished(r) => eprintln!(
            "[{}] done in {:.2} s: {} files processed ({:.0} files/s, {:.1} MB/s)",
            r.repo, r.elapsed_secs, r.files_processed, r.files_per_sec, r.mb_per_sec
        ),
        _ => {}
    }
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn main() -> Result<()> {
    let args = parse_args()?;
    if args.index.exists() {
        std::fs::remove_dir_all(&args.index)?;
    }
    let mut config = IndexerConfig::default();
    // Knobs for experiments; the reported figures use the defaults.
    if let Some(v) = env_usize("INDEX_BENCH_COMMIT_EVERY") {
        config.commit_every = v;
    }
    if let Some(v) = env_usize("INDEX_BENCH_WRITER_THREADS") {
        config.writer_threads = v;
    }
    if let Some(v) = env_usize("INDEX_BENCH_THREADS") {
        config.threads = v;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut indexer = Indexer::open(&args.index, config.clone())?;
    for (name, path) in &args.repos {
        indexer.add_repo(RepoSpec {
            path: path.clone(),
            name: Some(name.clone()),
            ..RepoSpec::default()
        })?;
    }

    // 1. Full index.
    let load_before = load_average();
    let cpu_start = cpu_secs();
    let start = Instant::now();
    let mut reports: Vec<SyncReport> = Vec::new();
    for (name, _) in &args.repos {
        reports.push(indexer.sync_repo(name, &progress)?);
    }
    let full = start.elapsed();
    let full_cpu = cpu_secs() - cpu_start;
    let rss_full = peak_rss();
    let files: u64 = reports.iter().map(|r| r.files_processed).sum();
    let indexed: u64 = reports.iter().map(|r| r.stats.files_indexed).sum();
    let bytes: u64 = reports.iter().map(|r| r.bytes_processed).sum();
    let chunks: u64 = reports.iter().map(|r| r.stats.chunks).sum();
    let symbols: u64 = reports.iter().map(|r| r.stats.symbols).sum();
    let index_bytes = dir_size(&args.index);

    // 2. Sync with nothing changed.
    let (first, first_path) = &args.repos[0];
    let t = Instant::now();
    let unchanged = indexer.sync_repo(first, &progress)?;
    let nochange = t.elapsed();

    // 3. Incremental sync after changing files.
    let changed = change_files(first_path, args.changed)?;
    let t = Instant::now();
    let incremental = indexer.sync_repo(first, &progress)?;
    let incr = t.elapsed();

    // 4. Retrieval latency, through a separately opened reader (as the server does).
    let reader = CodeIndex::open(&args.index)?;
    let repo_names: Vec<String> = args.repos.iter().map(|(n, _)| n.clone()).collect();
    let mut sample_files = Vec::new();
    for (name, path) in &args.repos {
        for (p, text) in code_files(path, 3000)? {
            sample_files.push((name.clone(), p, text));
        }
    }
    let samples = make_samples(&sample_files, args.queries + 100);
    let count_tokens = |s: &str| s.len() / 4 + 1;
    let mut latencies = Vec::with_capacity(args.queries);
    let mut returned = 0usize;
    let mut tokens = 0usize;
    let mut definitions = 0usize;
    for (i, s) in samples.iter().enumerate() {
        let mut request = RetrievalRequest::new(&repo_names, &s.path, &s.prefix, &s.suffix, 1024);
        request.cursor_line = Some(s.cursor_line);
        let t = Instant::now();
        let snippets = reader.retrieve(&request, &count_tokens)?;
        let d = t.elapsed();
        if i >= 100 {
            latencies.push(d);
            returned += snippets.len();
            tokens += snippets.iter().map(|x| x.tokens).sum::<usize>();
            definitions += snippets
                .iter()
                .filter(|x| x.kind == indexer::SnippetKind::Definition)
                .count();
            debug_assert!(snippets.iter().all(|x| x.repo != s.repo
                || x.path != s.path
                || x.end_line + 60 < s.cursor_line
                || x.start_line > s.cursor_line + 21));
        }
    }
    latencies.sort();
    let q = latencies.len().max(1) as f64;
    let mean = latencies.iter().sum::<Duration>() / u32::try_from(latencies.len().max(1))?;
    let rss_end = peak_rss();

    let secs = full.as_secs_f64().max(1e-9);
    let summary = serde_json::json!({
        "threads": threads,
        "allocator": if cfg!(feature = "mimalloc") { "mimalloc" } else { "system" },
        "config": {
            "max_file_bytes": config.max_file_bytes,
            "writer_threads": config.writer_threads,
            "writer_memory_bytes": config.writer_memory_bytes,
            "commit_every": config.commit_every,
        },
        "corpora": reports.iter().map(|r| serde_json::json!({
            "repo": r.repo,
            "candidate_files": r.files_total,
            "files_processed": r.files_processed,
            "files_indexed": r.stats.files_indexed,
            "bytes_indexed": r.bytes_processed,
            "chunks": r.stats.chunks,
            "symbols": r.stats.symbols,
            "skipped": r.stats.skipped,
            "languages": r.stats.languages,
            "secs": r.elapsed_secs,
            "files_per_sec": r.files_per_sec,
            "mb_per_sec": r.mb_per_sec,
        })).collect::<Vec<_>>(),
        "full_index": {
            "secs": full.as_secs_f64(),
            "files_processed": files,
            "files_indexed": indexed,
            "bytes": bytes,
            "chunks": chunks,
            "symbols": symbols,
            "files_per_sec": files as f64 / secs,
            "indexed_files_per_sec": indexed as f64 / secs,
            "mb_per_sec": bytes as f64 / 1e6 / secs,
            "cpu_secs": full_cpu,
            "files_per_cpu_sec": files as f64 / full_cpu.max(1e-9),
            "load_average_before": load_before,
        },
        "nochange_sync": { "repo": first, "secs": nochange.as_secs_f64(), "up_to_date": unchanged.up_to_date },
        "incremental_sync": {
            "repo": first,
            "changed_files": changed.len(),
            "files_processed": incremental.files_processed,
            "secs": incr.as_secs_f64(),
        },
        "retrieval": {
            "queries": latencies.len(),
            "budget_tokens": 1024,
            "p50_ms": ms(percentile(&latencies, 0.50)),
            "p90_ms": ms(percentile(&latencies, 0.90)),
            "p99_ms": ms(percentile(&latencies, 0.99)),
            "max_ms": ms(latencies.last().copied().unwrap_or_default()),
            "mean_ms": ms(mean),
            "snippets_per_query": returned as f64 / q,
            "definitions_per_query": definitions as f64 / q,
            "tokens_per_query": tokens as f64 / q,
        },
        "peak_rss_bytes_after_full_index": rss_full,
        "peak_rss_bytes": rss_end,
        "index_size_bytes": index_bytes,
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)?;
    }
    Ok(())
}
