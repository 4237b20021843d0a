//! Smaller models made from a subset of a GGUF model's transformer blocks.
//!
//! Speculative decoding with a draft model needs a cheaper model that shares the
//! main model's tokenizer. No such model can be downloaded here, so one is made
//! from the main model itself: keep some of its blocks (the embedding, final norm
//! and output head stay) and write a new GGUF file. The quantised blocks are
//! copied byte for byte; the tokenizer and every other key travel unchanged.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;

use candle_core::Device;
use candle_core::quantized::QTensor;
use candle_core::quantized::gguf_file::{self, Content, Value};

use crate::error::{EngineError, Result};

/// Parses a block list such as `0-5,28,29` (ranges inclusive) for a model with
/// `num_layers` blocks, sorted and without duplicates.
pub fn parse_layers(spec: &str, num_layers: usize) -> Result<Vec<usize>> {
    let bad = |why: String| EngineError::InvalidRequest(format!("layer list `{spec}`: {why}"));
    let mut set = BTreeSet::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| bad(format!("`{s}` is not a block number")))
        };
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => (num(part)?, num(part)?),
        };
        if lo > hi || hi >= num_layers {
            return Err(bad(format!(
                "`{part}` is not a range within 0-{}",
                num_layers.saturating_sub(1)
            )));
        }
        set.extend(lo..=hi);
    }
    if set.is_empty() {
        return Err(bad("no blocks".into()));
    }
    if set.len() == num_layers {
        return Err(bad("keeps every block; a draft must be smaller".into()));
    }
    Ok(set.into_iter().collect())
}

/// Writes to `out` a GGUF model made of `layers` (block numbers of `src`, sorted,
/// unique) and everything outside the blocks. Returns the number of tensors written.
pub fn write_layer_subset(src: &Path, layers: &[usize], out: &Path) -> Result<usize> {
    let file = File::open(src).map_err(|e| EngineError::io(src, e))?;
    let mut reader = BufReader::new(file);
    let content = Content::read(&mut reader)
        .map_err(|e| EngineError::invalid(src, format!("not a readable GGUF file: {e}")))?;
    let arch = match content.metadata.get("general.architecture") {
        Some(Value::String(a)) => a.clone(),
        _ => {
            return Err(EngineError::invalid(
                src,
                "`general.architecture` is missing",
            ));
        }
    };
    let count_key = format!("{arch}.block_count");
    let num_layers = content
        .metadata
        .get(&count_key)
        .and_then(|v| v.to_u32().ok())
        .ok_or_else(|| EngineError::invalid(src, format!("`{count_key}` is missing")))?
        as usize;
    if layers.is_empty() || layers.iter().any(|&l| l >= num_layers) {
        return Err(EngineError::InvalidRequest(format!(
            "layers {layers:?} are not blocks of a {num_layers}-block model"
        )));
    }
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let renamed = match block_of(name) {
            Some((block, rest)) => match layers.iter().position(|&l| l == block) {
                Some(new) => format!("blk.{new}.{rest}"),
                None => continue,
            },
            None => name.clone(),
        };
        let tensor = content
            .tensor(&mut reader, name, &Device::Cpu)
            .map_err(|e| EngineError::invalid(src, format!("tensor {name}: {e}")))?;
        tensors.push((renamed, tensor));
    }
    let list = layers
        .iter()
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let name = match content.metadata.get("general.name") {
        Some(Value::String(n)) => format!("{n} (draft: blocks {list})"),
        _ => format!("draft: blocks {list}"),
    };
    let mut metadata: Vec<(String, Value)> = content
        .metadata
        .iter()
        .filter(|(k, _)| k.as_str() != count_key && k.as_str() != "general.name")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    metadata.push((count_key, Value::U32(layers.len() as u32)));
    metadata.push(("general.name".into(), Value::String(name)));
    metadata.push(("souffleur.draft.source_blocks".into(), Value::String(list)));
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    let tmp = out.with_extension("gguf.partial");
    let written = (|| -> Result<()> {
        let f = File::create(&tmp).map_err(|e| EngineError::io(&tmp, e))?;
        let mut w = BufWriter::new(f);
        let meta: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let tens: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
        gguf_file::write(&mut w, &meta, &tens)
            .map_err(|e| EngineError::invalid(out, format!("writing GGUF: {e}")))?;
        let f = w
            .into_inner()
            .map_err(|e| EngineError::io(&tmp, e.into_error()))?;
        f.sync_all().map_err(|e| EngineError::io(&tmp, e))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, out).map_err(|e| EngineError::io(out, e))?;
    Ok(tensors.len())
}

/// `blk.N.rest` → `(N, rest)`.
fn block_of(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("blk.")?;
    let (n, rest) = rest.split_once('.')?;
    Some((n.parse().ok()?, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_lists_parse_and_reject_nonsense() {
        assert_eq!(
            parse_layers("0-2, 7,5", 10).expect("ok"),
            vec![0, 1, 2, 5, 7]
        );
        assert_eq!(parse_layers("3,3,3", 10).expect("ok"), vec![3]);
        for bad in ["", "a", "5-2", "0-10", "0-9", "-1"] {
            assert!(parse_layers(bad, 10).is_err(), "{bad}");
        }
    }

    #[test]
    fn block_names_split() {
        assert_eq!(
            block_of("blk.12.attn_q.weight"),
            Some((12, "attn_q.weight"))
        );
        assert_eq!(block_of("token_embd.weight"), None);
    }
}
