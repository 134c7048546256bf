//! Building one export folder from a checkpoint: `exports/<model_name>-<version>/`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::card::{ModelCard, Version, MODEL_CARD_FILE};
use super::hf::{
    self, Family, Form, SnapshotTensors, StackSupport, Target, CONFIG_FILE, MODELING_FILE,
    WEIGHTS_FILE,
};
use crate::infer::ModelRef;
use crate::model::preprocess::{Preprocess, PREPROCESSOR_FILE};
use crate::train::checkpoint::{Checkpoint, RunInfo};
use crate::train::head::HeadKind;
use crate::util::fsx;

/// Checksum file of an export (`sha256sum` format).
pub use crate::infer::SUMS_FILE;
/// Provenance record of an export.
pub const PROVENANCE_FILE: &str = "sv72_export.json";
/// Model card README.
pub const README_FILE: &str = "README.md";
/// Pointer file naming the newest export folder.
pub const LATEST: &str = "latest";
/// Symlink to the export that is served.
pub const DEPLOYED: &str = "deployed";

/// What to export and how.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// Checkpoint folder or pointer file; `None` = `checkpoints_root/latest`.
    pub checkpoint: Option<PathBuf>,
    pub checkpoints_root: PathBuf,
    /// `paths.exports`.
    pub exports_root: PathBuf,
    pub model_name: String,
    pub description: String,
    /// Licence named in the README front matter.
    pub license: String,
    /// The miner hotkey, SS58 (already checked with [`check_hotkey`]).
    pub hotkey: String,
    /// `None` = the previous export's version with the patch bumped (1.0.0 for the first).
    pub version: Option<Version>,
    /// Feature cache root, where backbone weight hashes are memoised.
    pub feature_cache: PathBuf,
    /// Which stack the export must load in (`--target`).
    pub target: Target,
    /// Test hook: fail right after writing this file, before the folder is renamed into place.
    #[doc(hidden)]
    pub fail_after: Option<String>,
}

/// What an export produced.
#[derive(Debug, Clone)]
pub struct ExportOutcome {
    pub dir: PathBuf,
    pub version: Version,
    pub form: Form,
    pub family: Family,
    pub run_id: String,
    /// Files in the folder, sorted.
    pub files: Vec<String>,
}

/// Provenance written to `sv72_export.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub format: String,
    pub model_name: String,
    pub version: String,
    pub created_at: String,
    pub code_revision: String,
    pub checkpoint: String,
    pub run_id: String,
    pub backbone: crate::train::checkpoint::BackboneInfo,
    pub backbone_snapshot: String,
    pub family: String,
    pub architecture: String,
    /// `sv72 export --target` (`subnet` or `transformers`).
    pub target: String,
    /// `true` when loading needs `trust_remote_code=True`.
    pub trust_remote_code: bool,
    /// Which transformers stacks load this export (README, "Export compatibility").
    pub loads_in: Vec<StackSupport>,
    pub head: crate::train::checkpoint::HeadInfo,
    pub temperature: f64,
    pub threshold: f64,
    pub preprocess: String,
    pub weights_dtype: String,
    pub manifest: crate::train::checkpoint::ManifestInfo,
    pub val_metrics: crate::metrics::BinaryMetrics,
    /// The checkpoint's `report.json` (from `sv72 eval`), when present.
    pub eval_report: Option<Value>,
    /// A fine-tuned checkpoint's backbone record; its tensors (LoRA merged) are in the export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetune: Option<crate::train::checkpoint::FinetuneInfo>,
}

/// Checks that `hotkey` is a valid SS58 address of the Bittensor format (42) and, when a wallet
/// hotkey is given, that both are the same key. A wrong `submitted_by` silently costs the miner
/// its submission, so any doubt stops the export.
pub fn check_hotkey(hotkey: &str, wallet_hotkey: Option<&str>) -> Result<()> {
    let (format, _) = crate::keys::ss58_decode(hotkey.trim())
        .with_context(|| format!("--hotkey {hotkey:?} is not a valid SS58 address"))?;
    if format != crate::keys::SS58_FORMAT {
        bail!(
            "--hotkey {hotkey:?} uses SS58 prefix {format}, but Bittensor hotkeys use {}: \
             copy the address from `btcli wallet list`",
            crate::keys::SS58_FORMAT
        );
    }
    if hotkey.trim() != hotkey {
        bail!("--hotkey {hotkey:?} has surrounding spaces");
    }
    if let Some(w) = wallet_hotkey {
        if w != hotkey {
            bail!(
                "--hotkey {hotkey} differs from the wallet's hotkey {w}: the model card must name \
                 the hotkey the miner registers with"
            );
        }
    }
    Ok(())
}

/// Versions of existing exports named `<model_name>-X.Y.Z` in `root`.
pub fn existing_versions(root: &Path, model_name: &str) -> Result<Vec<Version>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", root.display())),
    };
    let prefix = format!("{model_name}-");
    for entry in rd {
        let entry = entry.with_context(|| format!("cannot list {}", root.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(v) = name.strip_prefix(&prefix) {
            if let Ok(v) = v.parse::<Version>() {
                if entry.path().is_dir() {
                    out.push(v);
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The version the next export gets: the newest existing one bumped, else 1.0.0.
pub fn next_version(root: &Path, model_name: &str) -> Result<Version> {
    Ok(existing_versions(root, model_name)?
        .last()
        .map(|v| v.bump_patch())
        .unwrap_or(Version {
            major: 1,
            minor: 0,
            patch: 0,
        }))
}

/// Folder name of an export.
pub fn folder_name(model_name: &str, version: Version) -> String {
    format!("{model_name}-{version}")
}

/// Writes the export described by `req`; the folder appears complete or not at all, and
/// `exports/latest` moves only after it is in place.
pub fn export_checkpoint(req: &ExportRequest) -> Result<ExportOutcome> {
    let name = req.model_name.trim();
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        bail!(
            "export.model_name {:?} must be a plain folder name (no slashes, not hidden)",
            req.model_name
        );
    }
    check_hotkey(&req.hotkey, None)?;
    let ck_dir = ModelRef::checkpoint(req.checkpoint.as_deref(), &req.checkpoints_root)?;
    let dev = Default::default();
    let ck = Checkpoint::<crate::backend::Cpu>::load(&ck_dir, &dev)?;
    let info = ck.info.clone();

    let version = match req.version {
        Some(v) => v,
        None => next_version(&req.exports_root, name)?,
    };
    let dest = req.exports_root.join(folder_name(name, version));
    if dest.exists() {
        bail!(
            "{} already exists: versions are never overwritten; pass another --version or \
             leave it out to bump the patch number",
            dest.display()
        );
    }

    let snapshot = crate::train::checkpoint::checkpoint_snapshot(&ck_dir, &info)?;
    // The form first: a checkpoint the target cannot take stops before any hashing or writing.
    let family = Family::from_model_type(&crate::model::model_type(&snapshot)?, &snapshot)?;
    let mlp_hidden = match ck.head.kind() {
        HeadKind::Linear => None,
        HeadKind::Mlp { hidden } => Some(hidden),
    };
    let form = Form::choose(family, mlp_hidden, req.target)
        .with_context(|| format!("{}: {} head", ck_dir.display(), ck.head.kind().name()))?;
    if info.backbone.weights_hash.starts_with("bb-") {
        let key = crate::features::backbone_key(&snapshot, &req.feature_cache)?;
        if key != info.backbone.weights_hash {
            bail!(
                "{}: backbone {} has weights {key}, but the head was trained on {}; fetch the \
                 backbone revision the run used",
                ck_dir.display(),
                snapshot.display(),
                info.backbone.weights_hash
            );
        }
    }
    let pre = crate::train::checkpoint::training_preprocess(&ck, &snapshot)?;
    // A fine-tuned checkpoint's tensors over the snapshot (LoRA merged on read), so the export
    // is a plain model of the same built-in class.
    let weights = crate::train::checkpoint::backbone_weights(&ck_dir, &info, &snapshot)?;

    // Head tensors, calibration folded into the classifier.
    let mut head = ck.head.to_named_tensors()?;
    {
        let mut w = None;
        let mut b = None;
        for (n, _, v) in head.iter_mut() {
            match n.as_str() {
                "classifier.weight" => w = Some(v),
                "classifier.bias" => b = Some(v),
                _ => {}
            }
        }
        let (Some(w), Some(b)) = (w, b) else {
            bail!("{}: the head has no classifier", ck_dir.display());
        };
        hf::fold_calibration(w, b, info.temperature, info.threshold)
            .with_context(|| format!("calibration of {}", ck_dir.display()))?;
    }

    let cfg_path = snapshot.join(CONFIG_FILE);
    let backbone_cfg: Value = serde_json::from_str(&crate::model::read_config_text(&cfg_path)?)
        .with_context(|| format!("{} is not valid JSON", cfg_path.display()))?;
    let config = hf::build_config(&backbone_cfg, form, family, mlp_hidden, &cfg_path)?;
    let pre_json = hf::preprocessor_config(&pre, &snapshot, req.target)?;
    let reread = Preprocess::from_json(&pre_json, PREPROCESSOR_FILE)?;
    if !hf::same_recipe(&reread, &pre) {
        bail!(
            "the exported {PREPROCESSOR_FILE} would preprocess differently from training \
             ({reread:?} vs {pre:?})"
        );
    }

    let report_path = ck_dir.join("report.json");
    let eval_report: Option<Value> = match std::fs::read_to_string(&report_path) {
        Ok(t) => Some(
            serde_json::from_str(&t)
                .with_context(|| format!("{} is not valid JSON", report_path.display()))?,
        ),
        Err(_) => None,
    };
    let card = ModelCard {
        model_name: name.to_string(),
        description: req.description.clone(),
        version: version.to_string(),
        submitted_by: req.hotkey.clone(),
        submission_time: chrono::Utc::now().timestamp(),
    };
    card.validate().context("the model card to write")?;
    let prov = Provenance {
        format: "sv72-export-1".into(),
        model_name: name.to_string(),
        version: version.to_string(),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        code_revision: crate::train::checkpoint::code_revision(),
        checkpoint: ck_dir.display().to_string(),
        run_id: info.run_id.clone(),
        backbone: info.backbone.clone(),
        backbone_snapshot: snapshot.display().to_string(),
        family: family.name().into(),
        architecture: form.class().into(),
        target: req.target.name().into(),
        trust_remote_code: form == Form::Custom,
        loads_in: form.stacks(family),
        head: info.head.clone(),
        temperature: info.temperature,
        threshold: info.threshold,
        preprocess: pre.id(),
        weights_dtype: "float32".into(),
        manifest: info.manifest.clone(),
        val_metrics: info.metrics.val.clone(),
        eval_report: eval_report.clone(),
        finetune: info.finetune.clone(),
    };
    let readme = readme(
        &card,
        &prov,
        &info,
        mlp_hidden,
        &req.license,
        eval_report.as_ref(),
    );

    let fail_after = req.fail_after.clone();
    let check = |file: &str| -> Result<()> {
        if fail_after.as_deref() == Some(file) {
            bail!("injected failure after {file}");
        }
        Ok(())
    };
    let pb = crate::util::progress::bar(0, "export");
    let mut files = Vec::new();
    fsx::write_dir_atomic(&dest, |tmp| {
        let mut put = |file: &str, bytes: &[u8]| -> Result<()> {
            std::fs::write(tmp.join(file), bytes)
                .with_context(|| format!("cannot write {file} in {}", tmp.display()))?;
            files.push(file.to_string());
            check(file)
        };
        put(CONFIG_FILE, &serde_json::to_vec_pretty(&config)?)?;
        put(PREPROCESSOR_FILE, pre_json.as_bytes())?;
        if form == Form::Custom {
            put(MODELING_FILE, hf::modeling_py(family).as_bytes())?;
        }
        put(MODEL_CARD_FILE, &serde_json::to_vec_pretty(&card)?)?;
        put(PROVENANCE_FILE, &serde_json::to_vec_pretty(&prov)?)?;
        put(README_FILE, readme.as_bytes())?;
        let backbone = SnapshotTensors::from_weights(weights, &snapshot, family)?;
        hf::write_weights(&tmp.join(WEIGHTS_FILE), &backbone, family, head, &|i, n| {
            pb.set_length(n);
            pb.set_position(i);
        })?;
        files.push(WEIGHTS_FILE.to_string());
        check(WEIGHTS_FILE)?;
        files.sort();
        let sums = sha256sums(tmp, &files)?;
        std::fs::write(tmp.join(SUMS_FILE), sums)
            .with_context(|| format!("cannot write {SUMS_FILE}"))?;
        check(SUMS_FILE)
    })?;
    pb.finish_and_clear();
    files.push(SUMS_FILE.to_string());
    files.sort();
    fsx::write_atomic(
        &req.exports_root.join(LATEST),
        format!("{}\n", folder_name(name, version)).as_bytes(),
    )?;
    Ok(ExportOutcome {
        dir: dest,
        version,
        form,
        family,
        run_id: info.run_id,
        files,
    })
}

pub use crate::util::hash::sha256_file;

/// The `loads_in` record of an export's `sv72_export.json`.
pub fn loads_in(dir: &Path) -> Result<Vec<StackSupport>> {
    let path = dir.join(PROVENANCE_FILE);
    let prov: Provenance = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?,
    )
    .with_context(|| format!("{} is not an sv72 provenance record", path.display()))?;
    Ok(prov.loads_in)
}

/// `sha256sum` lines (`<hex>  <name>`) for `files` in `dir`.
pub fn sha256sums(dir: &Path, files: &[String]) -> Result<String> {
    let mut out = String::new();
    for f in files {
        out.push_str(&format!("{}  {f}\n", sha256_file(&dir.join(f))?));
    }
    Ok(out)
}

/// Checks every line of `dir/SHA256SUMS` and that no file of the folder is left out of it.
pub fn verify_sums(dir: &Path) -> Result<()> {
    let path = dir.join(SUMS_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {} (not an sv72 export, or an incomplete copy)",
            path.display()
        )
    })?;
    let mut listed = std::collections::BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (hash, file) = line.split_once("  ").with_context(|| {
            format!(
                "{} line {}: expected `<sha256>  <file>`",
                path.display(),
                i + 1
            )
        })?;
        if file.contains(['/', '\\']) || file.starts_with('.') {
            bail!(
                "{} line {}: unexpected file name {file:?}",
                path.display(),
                i + 1
            );
        }
        let got = sha256_file(&dir.join(file))?;
        if got != hash {
            bail!(
                "{}: checksum mismatch for {file} (listed {hash}, found {got}); the export was \
                 modified or damaged — re-export it",
                dir.display()
            );
        }
        listed.insert(file.to_string());
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let n = entry.file_name().to_string_lossy().to_string();
        if n != SUMS_FILE && entry.path().is_file() && !listed.contains(&n) {
            bail!("{}: {n} is not listed in {SUMS_FILE}", dir.display());
        }
    }
    if listed.is_empty() {
        bail!("{} lists no files", path.display());
    }
    Ok(())
}

fn fmt_metric(v: Option<&Value>) -> String {
    match v.and_then(Value::as_f64) {
        Some(x) => format!("{x:.4}"),
        None => "n/a".into(),
    }
}

/// The README model card (HF front matter + what the model is, how it was made, how to load it,
/// which stacks load it).
fn readme(
    card: &ModelCard,
    prov: &Provenance,
    info: &RunInfo,
    mlp_hidden: Option<usize>,
    license: &str,
    report: Option<&Value>,
) -> String {
    let dinov3 = prov.family == Family::Dinov3.name();
    let licence_note = if dinov3 {
        "The backbone weights are Meta's DINOv3 and remain under the DINOv3 License \
         (https://ai.meta.com/resources/models-and-libraries/dinov3-license/); its terms apply \
         to this model as a whole."
    } else {
        "The backbone weights are Meta's DINOv2, released under the Apache-2.0 licence."
    };
    // The front matter must name the licence the body says applies: the DINOv3 License is not
    // one of the Hub's identifiers, so it is `other` with a name and a link.
    let licence_meta = if dinov3 {
        "license: other\nlicense_name: dinov3-license\n\
         license_link: https://ai.meta.com/resources/models-and-libraries/dinov3-license/\n"
            .to_string()
    } else {
        format!("license: {license}\n")
    };
    let load = if prov.trust_remote_code {
        format!(
            "This export uses custom code (`{MODELING_FILE}`, class `{}`) because transformers \
             has no built-in class for it ({}). Load it with `trust_remote_code=True`:\n\n\
             ```python\nfrom transformers import pipeline\n\
             clf = pipeline(\"image-classification\", model=\"DIR\", trust_remote_code=True)\n```\n\n\
             **The subnet's reference miner (`vit_detector.py`) does not pass \
             `trust_remote_code=True` and cannot load this model; `sv72 serve` can.**\n",
            prov.architecture,
            if dinov3 {
                "transformers has no `DINOv3ViTForImageClassification`"
            } else {
                "an MLP head"
            }
        )
    } else if prov.loads_in.iter().all(|s| s.loads && !s.remote_code) {
        format!(
            "This is a standard `{}`; the subnet's reference miner loads it as is:\n\n\
             ```python\nfrom transformers import AutoImageProcessor, \
             AutoModelForImageClassification, pipeline\n\
             clf = pipeline(\"image-classification\",\n    \
             model=AutoModelForImageClassification.from_pretrained(\"DIR\"),\n    \
             feature_extractor=AutoImageProcessor.from_pretrained(\"DIR\", use_fast=True))\n\
             p = next(r[\"score\"] for r in clf(image) if r[\"label\"] == \"Roadwork\")\n```\n",
            prov.architecture
        )
    } else {
        format!(
            "This is a standard `{}` of current transformers (no remote code):\n\n\
             ```python\nfrom transformers import pipeline\n\
             clf = pipeline(\"image-classification\", model=\"DIR\")\n```\n\n\
             **The subnet's reference miner pins transformers 4.45.2, which has no such class, \
             and cannot load this model; `sv72 serve` can.**\n",
            prov.architecture
        )
    };
    let mut compat = String::from("| stack | loads | remote code | note |\n|---|---|---|---|\n");
    for s in &prov.loads_in {
        compat.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            s.stack,
            if s.loads { "yes" } else { "no" },
            if s.remote_code {
                "trust_remote_code=True"
            } else {
                "no"
            },
            s.note
        ));
    }
    let (metrics, source) = match report.and_then(|r| r.get("overall")) {
        Some(o) => (
            format!(
                "| accuracy | MCC | ROC AUC | ECE | expected reward |\n|---|---|---|---|---|\n\
                 | {} | {} | {} | {} | {} |\n",
                fmt_metric(o.get("accuracy")),
                fmt_metric(o.get("mcc")),
                fmt_metric(o.get("roc_auc")),
                fmt_metric(o.get("ece")),
                fmt_metric(report.and_then(|r| r.pointer("/expected_score/mean"))),
            ),
            format!(
                "`sv72 eval` on validator-style challenges ({} images)",
                report
                    .and_then(|r| r.get("images"))
                    .and_then(Value::as_u64)
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "?".into())
            ),
        ),
        None => {
            let v = &info.metrics.val;
            (
                format!(
                    "| accuracy | MCC | ROC AUC | ECE |\n|---|---|---|---|\n| {:.4} | {:.4} | {} | {:.4} |\n",
                    v.accuracy,
                    v.mcc,
                    v.roc_auc.map(|x| format!("{x:.4}")).unwrap_or_else(|| "n/a".into()),
                    v.ece
                ),
                format!("the validation split during training ({} rows)", info.manifest.val_rows),
            )
        }
    };
    // From the head itself, not from run.yaml's description of it.
    let head = match mlp_hidden {
        Some(h) => format!("MLP (hidden {h}, GELU)"),
        None => "linear".to_string(),
    };
    format!(
        "---\n{licence_meta}library_name: transformers\npipeline_tag: image-classification\n\
         tags:\n- image-classification\n- roadwork\n- bittensor\n- natix\n- streetvision\n\
         - subnet-72\n- {family}\n- sv72\n---\n\n\
         # {name} {version}\n\n{description}\n\n\
         Binary roadwork classifier for the NATIX StreetVision subnet (Bittensor subnet 72). \
         Labels: `0 = None`, `1 = Roadwork`; the \"Roadwork\" score is the probability the miner \
         answers (> 0.5 = roadwork).\n\n\
         ## Model\n\n\
         - Backbone: `{backbone}` ({family}, frozen, hidden size {hidden})\n\
         - Head: {head} on `[CLS ; mean of patch tokens]`\n\
         - Calibration: temperature {t:.4} and threshold {thr:.4}, folded into `classifier`\n\
         - Preprocessing: `{pre}` (see `preprocessor_config.json`)\n\
         - Weights: float32\n\
         - Source run: `{run}` ({code})\n\n\
         ## Data\n\n\
         Trained on `{manifest}` ({train} training / {val} validation images; {trows} training \
         rows with augmentation), synthetic share {synth:.2}, class balance `{balance}`.\n\n\
         ## Evaluation\n\nFrom {source}:\n\n{metrics}\n\
         ## Loading\n\n{load}\n\
         ## Compatibility\n\nWritten for `sv72 export --target {target}`:\n\n{compat}\n\
         ## Submission\n\n`model_card.json`: version {version}, submitted by `{hotkey}`.\n\n\
         ## Licence\n\n{licence_note}\n",
        family = prov.family,
        target = prov.target,
        name = card.model_name,
        version = card.version,
        description = card.description,
        backbone = info.backbone.name,
        hidden = info.backbone.hidden_size,
        t = info.temperature,
        thr = info.threshold,
        pre = info.config.backbone.preprocess,
        run = info.run_id,
        code = prov.code_revision,
        manifest = info.manifest.path,
        train = info.manifest.train_images,
        val = info.manifest.val_images,
        trows = info.manifest.train_rows,
        synth = info.config.mix.synthetic_fraction,
        balance = info.config.mix.balance,
        hotkey = card.submitted_by,
    )
}
