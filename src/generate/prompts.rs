//! What `sv72 generate` reads: a mine-hard output folder or its `prompts.jsonl`, any JSON-lines
//! prompt list, or a plain text file with one prompt per line.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::util::hash::stable_u64;

/// The file `mine-hard` writes (`cycle::mine::write::PROMPTS_JSONL`).
pub const PROMPTS_JSONL: &str = "prompts.jsonl";

/// One prompt to generate from.
#[derive(Debug, Clone, PartialEq)]
pub struct GenPrompt {
    /// Stable id (mine-hard's case id, or a hash of the prompt): names the output files and
    /// makes resume independent of line order.
    pub id: String,
    pub prompt: String,
    pub negative: Option<String>,
    /// 1 = roadwork, 0 = none: what the image must show.
    pub label: u8,
    /// False when the label is only a model's guess (mine-hard serve-log cases); such prompts
    /// are not used for image-to-image, whose result would inherit an unverified scene.
    pub label_known: bool,
    pub seed: Option<u64>,
    /// Source image for image-to-image.
    pub image: Option<PathBuf>,
    pub strength: Option<f64>,
}

fn parse_label(v: &Value) -> Option<u8> {
    match v {
        Value::Bool(b) => Some(u8::from(*b)),
        Value::Number(n) => match n.as_u64() {
            Some(0) => Some(0),
            Some(1) => Some(1),
            _ => None,
        },
        Value::String(s) => label_from_str(s),
        _ => None,
    }
}

/// `roadwork`/`1` or `none`/`0`.
pub fn label_from_str(s: &str) -> Option<u8> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "roadwork" | "true" => Some(1),
        "0" | "none" | "false" => Some(0),
        _ => None,
    }
}

/// Keeps ids usable as file names.
fn clean_id(raw: &str) -> Option<String> {
    let id: String = raw
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(64)
        .collect();
    (!id.is_empty()).then_some(id)
}

fn derived_id(p: &GenPrompt) -> String {
    let key = format!(
        "{}\u{1f}{}\u{1f}{}\u{1f}{:?}",
        p.prompt,
        p.negative.as_deref().unwrap_or(""),
        p.label,
        p.image
    );
    format!("{:016x}", stable_u64(&key))
}

/// Reads the prompts at `path` (see the module doc). `label` applies to prompts that carry none
/// (required for plain text).
pub fn read_prompts(path: &Path, label: Option<u8>) -> Result<Vec<GenPrompt>> {
    let file = if path.is_dir() {
        let f = path.join(PROMPTS_JSONL);
        if !f.is_file() {
            bail!(
                "--prompts {}: the folder has no {PROMPTS_JSONL} (give a mine-hard output folder or a prompts file)",
                path.display()
            );
        }
        f
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("--prompts {}: cannot read", file.display()))?;
    let base = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let jsonl = file
        .extension()
        .is_some_and(|e| e == "jsonl" || e == "json")
        || text.trim_start().starts_with('{');
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let at = || format!("{} line {}", file.display(), i + 1);
        let line = line.trim();
        if line.is_empty() || (!jsonl && line.starts_with('#')) {
            continue;
        }
        let p = if jsonl {
            from_json(line, &base, label).with_context(at)?
        } else {
            let label = label.with_context(|| {
                format!(
                    "{}: a plain prompt list has no labels; pass --label roadwork|none (or use mine-hard's {PROMPTS_JSONL})",
                    at()
                )
            })?;
            let mut p = GenPrompt {
                id: String::new(),
                prompt: line.to_string(),
                negative: None,
                label,
                label_known: true,
                seed: None,
                image: None,
                strength: None,
            };
            p.id = derived_id(&p);
            p
        };
        if !seen.insert(p.id.clone()) {
            // The same prompt twice (or a repeated id): generating it once per id keeps resume
            // well defined.
            continue;
        }
        out.push(p);
    }
    if out.is_empty() {
        bail!("--prompts {}: no prompts found", file.display());
    }
    Ok(out)
}

fn from_json(line: &str, base: &Path, label: Option<u8>) -> Result<GenPrompt> {
    let v: Value = serde_json::from_str(line).context("not a JSON object")?;
    let prompt = v
        .get("prompt")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .context("field `prompt` (a non-empty string) is missing")?
        .to_string();
    let label = match v.get("label") {
        Some(l) => parse_label(l)
            .with_context(|| format!("field `label` = {l} is not roadwork/none or 1/0"))?,
        None => label.context("field `label` is missing; add it or pass --label roadwork|none")?,
    };
    let seed = match v.get("seed") {
        None | Some(Value::Null) => None,
        Some(s) => Some(
            s.as_u64()
                .with_context(|| format!("field `seed` = {s} is not a non-negative integer"))?,
        ),
    };
    let strength = match v.get("strength") {
        None | Some(Value::Null) => None,
        Some(s) => {
            let f = s.as_f64().filter(|f| (0.0..=1.0).contains(f));
            Some(f.with_context(|| format!("field `strength` = {s} is not a number in [0, 1]"))?)
        }
    };
    let image = v
        .get("image")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let p = Path::new(s);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        });
    let mut p = GenPrompt {
        id: String::new(),
        prompt,
        negative: v
            .get("negative_prompt")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        label,
        label_known: v
            .get("label_known")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        seed,
        image,
        strength,
    };
    p.id = match v.get("id").and_then(Value::as_str).and_then(clean_id) {
        Some(id) => id,
        None => derived_id(&p),
    };
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_needs_a_label_and_dedups() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("p.txt");
        std::fs::write(
            &f,
            "# comment\na road with cones\n\na road with cones\nan empty road\n",
        )
        .unwrap();
        let err = read_prompts(&f, None).unwrap_err();
        assert!(format!("{err:#}").contains("--label"), "{err:#}");
        let p = read_prompts(&f, Some(1)).unwrap();
        assert_eq!(p.len(), 2);
        assert!(p.iter().all(|p| p.label == 1 && p.image.is_none()));
        assert_ne!(p[0].id, p[1].id);
        assert_eq!(p[0].id, read_prompts(&f, Some(1)).unwrap()[0].id);
    }

    #[test]
    fn jsonl_fields_and_errors_name_the_line() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("p.jsonl");
        std::fs::write(
            &f,
            "{\"id\":\"abc\",\"prompt\":\"x\",\"label\":\"none\",\"seed\":5,\"image\":\"img/a.png\",\"strength\":0.3,\"label_known\":false,\"extra\":1}\n",
        )
        .unwrap();
        let p = &read_prompts(&f, None).unwrap()[0];
        assert_eq!(
            (p.id.as_str(), p.label, p.seed, p.strength),
            ("abc", 0, Some(5), Some(0.3))
        );
        assert_eq!(
            p.image.as_deref(),
            Some(d.path().join("img/a.png").as_path())
        );
        assert!(!p.label_known);
        std::fs::write(&f, "{\"prompt\":\"x\",\"label\":\"maybe\"}\n").unwrap();
        let err = format!("{:#}", read_prompts(&f, None).unwrap_err());
        assert!(err.contains("line 1") && err.contains("label"), "{err}");
    }
}
