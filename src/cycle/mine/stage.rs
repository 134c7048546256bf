//! `sv72 mine-hard` as a library call: the inputs (serve log, eval predictions, a second
//! model), the backbone that embeds the candidates (found through a checkpoint's `run.yaml` or an
//! export's provenance), and [`mine`](super::mine) over them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use chrono::{DateTime, NaiveDate, Utc};

use super::{Criteria, Embedded, EvalInput, ServeInput, Settings, Summary};
use crate::backend::{on_device, Cpu, Device, OnBackend};
use crate::config::Config;
use crate::data::decode::DecodeLimits;
use crate::data::manifest::{manifest_path, read_manifest};
use crate::eval::{read_predictions, PREDICTIONS_FILE};
use crate::features::featurizer::Featurizer;
use crate::infer::{model_loader, ModelRef, Predictor};
use crate::serve::predlog::read_prediction_log;
use crate::train::Checkpoint;

/// What `sv72 mine-hard` mines (its flags; see the CLI help for each).
#[derive(Debug, Clone, Default)]
pub struct MineRequest {
    pub out: Option<PathBuf>,
    pub serve_log: Option<PathBuf>,
    pub since: Option<String>,
    pub eval: Option<PathBuf>,
    pub manifest: Option<String>,
    pub compare: Option<PathBuf>,
    pub model_b: Option<PathBuf>,
    pub backbone: Option<String>,
    pub checkpoint: Option<PathBuf>,
    pub no_embed: bool,
    pub max_cases: Option<usize>,
    /// Ask the VLM judge (`judge:` in the config) about every candidate.
    pub judge: bool,
    /// Device for embeddings and the second model (default: `backbone.device`).
    pub device: Option<Device>,
}

/// Parses `--since`: RFC 3339, a date (midnight UTC) or an age `<n>d|h|m` before `now`.
pub fn parse_since(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let t = s.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        if let Some(dt) = d.and_hms_opt(0, 0, 0) {
            return Ok(dt.and_utc());
        }
    }
    let (num, unit) = t.split_at(t.len().saturating_sub(1));
    let secs = match (num.parse::<u64>(), unit) {
        (Ok(n), "d") => n.checked_mul(86_400),
        (Ok(n), "h") => n.checked_mul(3_600),
        (Ok(n), "m") => n.checked_mul(60),
        _ => None,
    };
    match secs.and_then(|s| i64::try_from(s).ok()) {
        Some(s) => Ok(now - chrono::Duration::seconds(s)),
        None => bail!(
            "--since {s:?}: use an RFC 3339 time, a date like 2026-11-01, or an age like 7d / 48h"
        ),
    }
}

/// `predictions.jsonl` of an eval folder, or the file itself.
fn predictions_file(flag: &str, p: &Path) -> Result<PathBuf> {
    if p.is_dir() {
        Ok(p.join(PREDICTIONS_FILE))
    } else if p.exists() {
        Ok(p.to_path_buf())
    } else {
        bail!(
            "{flag} {}: no such eval folder or {PREDICTIONS_FILE} (run `sv72 eval --out DIR` first)",
            p.display()
        )
    }
}

/// `meta.<key>` of the `report.json` beside an eval's predictions, if any.
fn report_meta(preds: &Path, key: &str) -> Option<String> {
    let report = preds.parent()?.join("report.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(report).ok()?).ok()?;
    v.get("meta")?.get(key)?.as_str().map(str::to_string)
}

/// Embeds candidates with a featurizer's backbone on the backend `on_device` picks.
struct EmbedOn<'a> {
    fz: &'a mut Featurizer,
    items: &'a [(String, PathBuf)],
    batch_size: usize,
}

impl OnBackend for EmbedOn<'_> {
    type Out = Embedded;
    fn run<B: Backend>(self, dev: &B::Device, _name: &str) -> Result<Embedded> {
        let model = self.fz.load_backbone::<B>(dev)?;
        super::embed_images::<B, _>(
            &model,
            dev,
            self.items,
            &self.fz.preprocess,
            self.batch_size,
            &mut self.fz.cache,
        )
    }
}

/// The backbone for embeddings, or why there is none. Explicit flags fail loudly; implicit
/// defaults fall back to ranking with a warning.
fn featurizer(
    req: &MineRequest,
    cfg: &Config,
    eval_preds: Option<&Path>,
) -> Result<Result<(String, Featurizer), String>> {
    if req.no_embed {
        return Ok(Err("--no-embed".into()));
    }
    if let Some(bb) = &req.backbone {
        let mut b = cfg.backbone.clone();
        b.model = bb.clone();
        let fz = Featurizer::open(&b, cfg.augment.target_size, &cfg.paths.feature_cache)
            .with_context(|| format!("--backbone {bb}: cannot load it"))?;
        return Ok(Ok((bb.clone(), fz)));
    }
    let (dir, explicit) = match &req.checkpoint {
        Some(c) => (Some(c.clone()), true),
        None => {
            let from_report = eval_preds
                .and_then(|p| report_meta(p, "checkpoint"))
                .map(PathBuf::from)
                .filter(|p| p.is_dir());
            let deployed = cfg.paths.exports.join(crate::export::build::DEPLOYED);
            let dir = from_report
                .or_else(|| deployed.is_dir().then_some(deployed))
                .or_else(|| ModelRef::checkpoint(None, &cfg.paths.checkpoints).ok());
            (dir, false)
        }
    };
    let Some(dir) = dir else {
        return Ok(Err("no backbone: give --backbone or --checkpoint".into()));
    };
    match backbone_of(&dir, cfg) {
        Ok(x) => Ok(Ok(x)),
        Err(e) if explicit => Err(e.context(format!(
            "--checkpoint {}: cannot load its backbone",
            dir.display()
        ))),
        Err(e) => {
            let why = format!("the backbone of {} is not available: {e:#}", dir.display());
            eprintln!("mine-hard: warning: {why}; ranking by hardness instead");
            Ok(Err(why))
        }
    }
}

/// The backbone a checkpoint (its `run.yaml`), an export folder (its `sv72_export.json`,
/// through the source checkpoint when it is still there) or a model spec was built on.
fn backbone_of(dir: &Path, cfg: &Config) -> Result<(String, Featurizer)> {
    // A model spec embeds with its base model's backbone (an ensemble's first member's).
    if crate::infer::is_spec_file(dir) {
        let spec = crate::infer::ModelSpec::read(dir)?;
        let base = if spec.is_ensemble() {
            spec.member_paths(dir)?.swap_remove(0)
        } else {
            spec.base(dir)?
        };
        return backbone_of(&base, cfg);
    }
    let provenance = dir.join(crate::export::build::PROVENANCE_FILE);
    let ck_dir = if provenance.is_file() {
        let text = std::fs::read_to_string(&provenance)
            .with_context(|| format!("cannot read {}", provenance.display()))?;
        let p: crate::export::build::Provenance =
            serde_json::from_str(&text).with_context(|| {
                format!("{} is not an sv72 export provenance", provenance.display())
            })?;
        let source = PathBuf::from(&p.checkpoint);
        if !source.join(crate::train::checkpoint::HEAD_FILE).is_file() {
            // The source checkpoint is gone: any embedding of the same backbone serves
            // diversity, so take the named backbone with this config's preprocessing.
            let mut b = cfg.backbone.clone();
            b.model = p.backbone.name.clone();
            let fz = Featurizer::open(&b, cfg.augment.target_size, &cfg.paths.feature_cache)?;
            return Ok((p.backbone.name, fz));
        }
        source
    } else {
        ModelRef::checkpoint(Some(dir), &cfg.paths.checkpoints)?
    };
    let ck = Checkpoint::<Cpu>::load(&ck_dir, &Default::default())?;
    let mut b = ck.info.config.backbone.clone();
    b.model = ck.info.backbone.name.clone();
    let mut fz = Featurizer::open(
        &b,
        ck.info.config.augment.target_size,
        &cfg.paths.feature_cache,
    )?;
    // A fine-tuned checkpoint embeds with its own backbone.
    if let Some(o) = crate::train::checkpoint::finetune_overlay(&ck.dir, &ck.info)? {
        fz = fz.with_finetuned(o, &ck.info.features_key(), &cfg.paths.feature_cache)?;
    }
    Ok((ck.info.backbone.name.clone(), fz))
}

/// Runs `sv72 mine-hard`: reads the inputs `req` names, scores serve-log images with a second
/// model, embeds the candidates (or ranks them when no backbone is available) and writes the
/// selection to `req.out`.
pub fn run_mine_hard(cfg: &Config, req: &MineRequest) -> Result<Summary> {
    let mh = &cfg.mine_hard;
    let out = req
        .out
        .clone()
        .context("--out DIR is required (where the hard cases are written)")?;
    let criteria = Criteria::from_config(mh)?;
    let distance = mh.distance;
    let device = req.device.unwrap_or(cfg.backbone.device);
    if req.compare.is_some() && req.eval.is_none() {
        bail!("--compare needs --eval: it is compared with that eval's predictions");
    }
    let serve_log = match (&req.serve_log, &req.eval) {
        (Some(p), _) => {
            if !p.is_file() {
                bail!("--serve-log {}: no such file", p.display());
            }
            Some(p.clone())
        }
        (None, None) => {
            let p = cfg.serve.prediction_log.clone();
            if !p.is_file() {
                bail!(
                    "nothing to mine: serve.prediction_log {} does not exist; give --serve-log FILE or --eval DIR",
                    p.display()
                );
            }
            Some(p)
        }
        (None, Some(_)) => None,
    };
    if req.model_b.is_some() && serve_log.is_none() {
        bail!(
            "--model-b scores serve-log images; give --serve-log (for eval outputs use --compare)"
        );
    }
    let serve = match &serve_log {
        Some(log) => {
            let since = req
                .since
                .as_deref()
                .map(|s| parse_since(s, Utc::now()))
                .transpose()?;
            Some(ServeInput {
                log: log.clone(),
                read: read_prediction_log(log, since)?,
            })
        }
        None => None,
    };
    let eval_preds = req
        .eval
        .as_deref()
        .map(|p| predictions_file("--eval", p))
        .transpose()?;
    let eval = match &eval_preds {
        Some(preds_path) => {
            let predictions = read_predictions(preds_path)?;
            let manifest_path = match (&req.manifest, report_meta(preds_path, "manifest")) {
                (Some(m), _) => manifest_path(&cfg.paths.datasets, m),
                (None, Some(m)) => PathBuf::from(m),
                (None, None) => bail!(
                    "cannot tell which manifest {} refers to (no report.json with meta.manifest beside it); give --manifest",
                    preds_path.display()
                ),
            };
            let manifest = read_manifest(&manifest_path).with_context(|| {
                format!(
                    "the eval's manifest {} (override with --manifest)",
                    manifest_path.display()
                )
            })?;
            let compare = match &req.compare {
                Some(c) => {
                    let p = predictions_file("--compare", c)?;
                    let preds = read_predictions(&p)?;
                    Some((p, preds))
                }
                None => None,
            };
            Some(EvalInput {
                predictions_path: preds_path.clone(),
                predictions,
                compare,
                manifest_path,
                manifest,
            })
        }
        None => None,
    };
    let judge = if req.judge {
        match crate::judge::Judge::from_config(&cfg.judge)? {
            Some(j) => Some(j),
            None => bail!(
                "--judge: judge.endpoint is empty; set it in the config (or --set \
                 judge.endpoint=http://HOST:PORT/v1) to an OpenAI-compatible VLM server"
            ),
        }
    } else {
        None
    };
    let settings = Settings {
        criteria,
        max_cases: req.max_cases.unwrap_or(mh.max_cases),
        seed: mh.seed,
        distance,
        contact_sheet_max: mh.contact_sheet_max,
        datasets_root: cfg.paths.datasets.clone(),
        limits: DecodeLimits {
            max_pixels: cfg.ingest.max_pixels,
            max_file_bytes: cfg.ingest.max_file_bytes,
        },
        judge,
    };
    let mut model_b = match &req.model_b {
        Some(p) => {
            let loader = model_loader(cfg, device)?;
            let m =
                loader(p).with_context(|| format!("--model-b {}: cannot load it", p.display()))?;
            Some((p.display().to_string(), m))
        }
        None => None,
    };
    let fz = featurizer(req, cfg, eval_preds.as_deref())?;
    let (mut fz, no_embed_reason) = match fz {
        Ok((name, fz)) => (Some((name, fz)), String::new()),
        Err(why) => (None, why),
    };
    let backbone_name = fz.as_ref().map(|(n, _)| n.clone());
    let batch_size = cfg.backbone.batch_size;
    let dtype = cfg.backbone.dtype;
    let mut embed_fn = |items: &[(String, PathBuf)]| -> Result<Embedded> {
        let Some((_, fz)) = fz.as_mut() else {
            bail!("no backbone");
        };
        eprintln!("mine-hard: embedding {} candidate(s)", items.len());
        on_device(
            device,
            dtype,
            EmbedOn {
                fz,
                items,
                batch_size,
            },
        )
    };
    let embed: Option<(String, &mut super::Embedder<'_>)> =
        backbone_name.map(|n| (n, &mut embed_fn as &mut super::Embedder<'_>));
    let model_b_ref: Option<(String, &mut dyn Predictor)> = match model_b.as_mut() {
        Some((n, m)) => Some((n.clone(), &mut **m)),
        None => None,
    };
    super::mine(
        serve,
        eval,
        model_b_ref,
        embed,
        &no_embed_reason,
        &settings,
        &out,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_forms() {
        let now: DateTime<Utc> = "2026-11-24T12:00:00Z".parse().unwrap();
        assert_eq!(
            parse_since("7d", now).unwrap(),
            "2026-11-17T12:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            parse_since("2026-11-01", now).unwrap(),
            "2026-11-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            parse_since("2026-11-02T03:04:05+01:00", now).unwrap(),
            "2026-11-02T02:04:05Z".parse::<DateTime<Utc>>().unwrap()
        );
        let err = parse_since("yesterday", now).unwrap_err().to_string();
        assert!(err.contains("--since"), "{err}");
    }
}
