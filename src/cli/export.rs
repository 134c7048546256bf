//! `sv72 export`: a checkpoint as a Hugging Face image-classification folder, optionally pushed.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::args::WalletArgs;
use super::Ctx;
use crate::export::{self, ExportRequest, Form, PushOptions, Target, Version};
use crate::infer::{CheckpointPredictor, ExportPredictor, LoadOptions, Predictor};
use crate::keys::read_wallet_hotkey;

/// Flags of `sv72 export`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint folder or pointer file (default: paths.checkpoints/latest).
    pub checkpoint: Option<PathBuf>,
    /// The miner's hotkey (SS58) written to model_card.json `submitted_by`.
    #[arg(long, value_name = "SS58")]
    pub hotkey: String,
    /// Which stack the export must load in: `subnet` (the subnet miner's transformers 4.45.2 and
    /// current transformers, no remote code; DINOv2 + linear head only) or `transformers`
    /// (current transformers; registers, DINOv3 and MLP heads, remote code where needed).
    #[arg(long, value_enum, default_value_t = Target::Subnet)]
    pub target: Target,
    /// Version X.Y.Z (default: the previous export's version with the patch bumped, or 1.0.0).
    #[arg(long, value_name = "X.Y.Z")]
    pub version: Option<String>,
    /// Push the export to this Hugging Face model repository (token from HF_TOKEN).
    #[arg(long, value_name = "ORG/REPO")]
    pub push: Option<String>,
    /// `--wallet NAME`: check --hotkey against this wallet's hotkey (stops on a mismatch).
    #[command(flatten)]
    pub wallet: WalletArgs,
    /// After exporting, score these images through the checkpoint and through the export and
    /// compare (repeatable).
    #[arg(long = "selfcheck", value_name = "IMAGE")]
    pub selfcheck: Vec<PathBuf>,
    /// Write the self-check probabilities as JSON (for `tools/export_reference.py --check`).
    #[arg(long, value_name = "FILE", requires = "selfcheck")]
    pub selfcheck_out: Option<PathBuf>,
}

/// Runs `sv72 export`.
pub fn run(args: Args, ctx: &Ctx) -> Result<ExitCode> {
    let cfg = &ctx.config;
    let wallet_hotkey = match &args.wallet.wallet {
        Some(_) => {
            let (root, name, hotkey) = args.wallet.resolve(cfg);
            Some(read_wallet_hotkey(&root, &name, &hotkey)?)
        }
        None if args.wallet.wallet_hotkey.is_some() => {
            bail!("--wallet-hotkey needs --wallet (the wallet whose hotkey --hotkey is checked against)")
        }
        None => None,
    };
    export::check_hotkey(&args.hotkey, wallet_hotkey.as_deref())?;
    let version = args
        .version
        .as_deref()
        .map(|v| v.parse::<Version>().context("--version"))
        .transpose()?;
    // Fail before any work when the push cannot happen.
    let push = match &args.push {
        Some(repo) => {
            let ok = repo.split('/').count() == 2 && repo.split('/').all(|p| !p.is_empty());
            if !ok {
                bail!("--push {repo:?} must be ORG/REPO");
            }
            let token = std::env::var("HF_TOKEN")
                .ok()
                .filter(|t| !t.trim().is_empty());
            let Some(token) = token else {
                bail!(
                    "--push needs a Hugging Face write token in the HF_TOKEN environment \
                     variable (create one at https://huggingface.co/settings/tokens); nothing \
                     was exported"
                );
            };
            Some((repo.clone(), token))
        }
        None => None,
    };
    let req = ExportRequest {
        checkpoint: args.checkpoint.clone(),
        checkpoints_root: cfg.paths.checkpoints.clone(),
        exports_root: cfg.paths.exports.clone(),
        model_name: cfg.export.model_name.clone(),
        description: cfg.export.description.clone(),
        license: cfg.export.license.clone(),
        hotkey: args.hotkey.clone(),
        version,
        feature_cache: cfg.paths.feature_cache.clone(),
        target: args.target,
        fail_after: None,
    };
    let out = export::export_checkpoint(&req)?;
    println!(
        "exported {} (run {}, {} {}) to {}",
        out.version,
        out.run_id,
        out.family.name(),
        out.form.class(),
        out.dir.display()
    );
    for s in export::loads_in(&out.dir)? {
        println!(
            "  {}: {}{}",
            s.stack,
            if s.loads { "loads" } else { "does not load" },
            if s.remote_code && s.loads {
                " (trust_remote_code=True)"
            } else {
                ""
            }
        );
    }
    if out.form == Form::Custom || args.target != Target::Subnet {
        eprintln!(
            "WARNING: {} is written for current transformers ({}); the subnet's reference miner \
             (transformers 4.45.2, no trust_remote_code) cannot load it; `sv72 serve` can.",
            out.dir.display(),
            if out.form == Form::Custom {
                "modeling_sv72.py, trust_remote_code=True"
            } else {
                "built-in class"
            }
        );
    }
    if !args.selfcheck.is_empty() {
        selfcheck(&args, ctx, &out.dir)?;
    }
    if let Some((repo, token)) = push {
        let opts = PushOptions {
            endpoint: cfg.export.hf_endpoint.clone(),
            token,
            private: cfg.export.private,
            revision: "main".into(),
            commit_message: format!(
                "sv72 export {} {} (run {})",
                cfg.export.model_name, out.version, out.run_id
            ),
        };
        match export::push_folder(&out.dir, &repo, &opts) {
            Ok(r) => println!("pushed {} files to {}", r.files.len(), r.url),
            Err(e) => bail!(
                "push to {repo} failed: {e:#}; the export stays at {} — push it again with a \
                 later `sv72 export --push` of a new version or upload the folder by hand",
                out.dir.display()
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Scores the self-check images through the checkpoint and the export, prints the largest
/// difference and optionally writes both as JSON.
fn selfcheck(args: &Args, ctx: &Ctx, dir: &std::path::Path) -> Result<()> {
    let cfg = &ctx.config;
    let opts = LoadOptions::from_config(cfg);
    let dev = Default::default();
    let ck_path = args
        .checkpoint
        .clone()
        .unwrap_or_else(|| cfg.paths.checkpoints.join(crate::train::checkpoint::LATEST));
    let mut ck = CheckpointPredictor::<crate::backend::Cpu>::load(&ck_path, &dev, &opts)?;
    let mut ex = ExportPredictor::<crate::backend::Cpu>::load(dir, &dev, &opts)?;
    let mut images = Vec::new();
    for p in &args.selfcheck {
        let bytes = std::fs::read(p)
            .with_context(|| format!("--selfcheck {}: cannot read the image", p.display()))?;
        let rgb = crate::data::decode::decode_rgb_any(&bytes)
            .with_context(|| format!("--selfcheck {}: cannot decode the image", p.display()))?;
        images.push(rgb);
    }
    let a = ck.predict(&images)?;
    let b = ex.predict(&images)?;
    let max = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    println!(
        "selfcheck: {} images, max |checkpoint - export| = {max:.2e}",
        images.len()
    );
    if let Some(out) = &args.selfcheck_out {
        let rows: Vec<_> = args
            .selfcheck
            .iter()
            .zip(a.iter().zip(&b))
            .map(|(p, (x, y))| json!({"image": p.display().to_string(), "checkpoint": x, "export": y}))
            .collect();
        crate::util::fsx::write_json_atomic(
            out,
            &json!({"export": dir.display().to_string(), "images": rows, "max_abs_diff": max}),
        )?;
    }
    Ok(())
}
