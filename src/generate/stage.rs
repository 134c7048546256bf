//! The `sv72 generate` stage: command-line overrides on `generate.*`, the key from the
//! environment, the run, and the error a script sees when images failed.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};

use super::{format_report, prompts::label_from_str, run, GenerateReport, GenerateRequest, Secret};
use crate::config::{GenBackend, GenMode, GenerateConfig};

/// Values given on the command line; each replaces its `generate.*` config key.
#[derive(Debug, Clone, Default)]
pub struct GenOverrides {
    pub backend: Option<GenBackend>,
    pub endpoint: Option<String>,
    pub model: Option<String>,
    pub mode: Option<GenMode>,
    pub images_per_prompt: Option<u32>,
    pub batch: Option<u32>,
    pub concurrency: Option<usize>,
    pub strength: Option<f64>,
    pub workflow: Option<PathBuf>,
}

impl GenOverrides {
    /// `cfg` with the overrides applied; an out-of-range value names its flag.
    pub fn apply(&self, cfg: &GenerateConfig) -> Result<GenerateConfig> {
        let mut cfg = cfg.clone();
        if let Some(b) = self.backend {
            if cfg.backend != b && self.endpoint.is_none() {
                // The configured endpoint belongs to the configured backend.
                cfg.endpoint = None;
            }
            cfg.backend = b;
        }
        if self.endpoint.is_some() {
            cfg.endpoint.clone_from(&self.endpoint);
        }
        if self.model.is_some() {
            cfg.model.clone_from(&self.model);
        }
        if let Some(m) = self.mode {
            cfg.mode = m;
        }
        for (flag, v) in [
            ("--per-prompt", self.images_per_prompt.map(|n| n as usize)),
            ("--batch", self.batch.map(|n| n as usize)),
            ("--concurrency", self.concurrency),
        ] {
            if v == Some(0) {
                bail!("{flag} must be at least 1");
            }
        }
        if let Some(n) = self.images_per_prompt {
            cfg.images_per_prompt = n;
        }
        if let Some(n) = self.batch {
            cfg.batch = n;
        }
        if let Some(n) = self.concurrency {
            cfg.concurrency = n;
        }
        if let Some(s) = self.strength {
            if !(0.0..=1.0).contains(&s) {
                bail!("--strength {s} must be within [0, 1]");
            }
            cfg.strength = s;
        }
        if self.workflow.is_some() {
            cfg.comfyui.workflow.clone_from(&self.workflow);
        }
        Ok(cfg)
    }
}

/// Parses `--label` (`roadwork`/`none`, `1`/`0`).
pub fn parse_label(s: &str) -> Result<u8> {
    label_from_str(s).ok_or_else(|| anyhow!("--label {s:?}: use roadwork or none"))
}

/// Runs `sv72 generate`: applies `over` to `cfg`, reads the key from `generate.api_key_env` (or
/// the backend's usual variable), generates, and prints the report through `out`. Images that
/// failed after their retries make it an error naming the first, after the finished ones are
/// recorded.
pub fn run_generate(
    cfg: &GenerateConfig,
    over: &GenOverrides,
    req: &GenerateRequest,
    out: &mut dyn FnMut(&str),
) -> Result<GenerateReport> {
    let cfg = over.apply(cfg)?;
    let key_env = cfg
        .api_key_env
        .clone()
        .unwrap_or_else(|| cfg.backend.default_key_env().to_string());
    let key = std::env::var(&key_env).ok().and_then(Secret::new);
    let report = run(req, &cfg, key)?;
    out(&format_report(&report));
    if let Some(first) = report.failures.first() {
        bail!(
            "{} image(s) failed (first: {}); re-run the same command to retry them (finished images are kept)",
            report.failed_images(),
            first.error
        );
    }
    Ok(report)
}
