//! Head training on in-memory feature vectors: AdamW, cosine schedule with linear warm-up,
//! class-balanced (optionally label-smoothed) cross-entropy, early stopping on validation MCC,
//! then temperature scaling and threshold choice on validation.
//!
//! Every random choice (initialisation, shuffling, dropout masks) comes from one `ChaCha8Rng`
//! seeded with `train.seed`, never from the backend's global RNG, so the same inputs give a
//! bit-identical head.

use anyhow::{bail, Result};
use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{activation, ElementConversion, Int, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::head::{served_probability, Head, HeadKind};
use crate::config::TrainConfig;
use crate::metrics::{self, BinaryMetrics, ScoreItem, ScoreSummary};

/// Feature vectors with their labels (row-major `[n, dim]`).
#[derive(Debug, Clone, Default)]
pub struct FeatureSet {
    pub x: Vec<f32>,
    pub dim: usize,
    pub labels: Vec<u8>,
    /// Per row: synthetic image (for the score simulation's 50/50 real/synthetic draw).
    pub synthetic: Vec<bool>,
    /// Per row: validator augmentation level of the view (0 for clean images).
    pub levels: Vec<u8>,
}

impl FeatureSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Appends one row.
    pub fn push(&mut self, features: &[f32], label: u8, synthetic: bool, level: u8) -> Result<()> {
        if self.dim == 0 {
            self.dim = features.len();
        }
        if features.len() != self.dim || self.dim == 0 {
            bail!(
                "feature vector of width {} does not match the set's width {}",
                features.len(),
                self.dim
            );
        }
        self.x.extend_from_slice(features);
        self.labels.push(label);
        self.synthetic.push(synthetic);
        self.levels.push(level);
        Ok(())
    }

    fn check(&self, what: &str) -> Result<()> {
        if self.is_empty() {
            bail!("the {what} set is empty: the manifest needs {what} rows");
        }
        if self.x.len() != self.len() * self.dim
            || self.synthetic.len() != self.len()
            || self.levels.len() != self.len()
        {
            bail!("the {what} feature set is inconsistent (rows, width and metadata disagree)");
        }
        if self.labels.iter().any(|&y| y > 1) {
            bail!("the {what} set has labels other than 0/1");
        }
        Ok(())
    }
}

/// Optimisation settings: the head (`head.*`, parsed once), `train.*` as configured, and the
/// validation scoring (`augment.level_probs`, `eval.score_sequences`).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSettings {
    pub head: HeadKind,
    pub dropout: f64,
    pub train: TrainConfig,
    pub level_probs: [f64; 4],
    pub score_sequences: usize,
}

impl TrainSettings {
    /// From the config; an error for a head it cannot build (`head.hidden = 0` for an MLP).
    pub fn from_config(cfg: &crate::config::Config) -> Result<Self> {
        Ok(TrainSettings {
            head: HeadKind::from_config(&cfg.head)?,
            dropout: cfg.head.dropout,
            train: cfg.train.clone(),
            level_probs: cfg.augment.level_probs,
            score_sequences: cfg.eval.score_sequences,
        })
    }

    fn validate(&self) -> Result<()> {
        if self.train.epochs == 0 || self.train.batch_size == 0 {
            bail!("train.epochs and train.batch_size must be > 0");
        }
        if self.train.lr.is_nan() || self.train.lr <= 0.0 {
            bail!("train.lr = {} must be > 0", self.train.lr);
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("head.dropout = {} must be within [0, 1)", self.dropout);
        }
        if !(0.0..1.0).contains(&self.train.label_smoothing) {
            bail!(
                "train.label_smoothing = {} must be within [0, 1)",
                self.train.label_smoothing
            );
        }
        Ok(())
    }
}

/// Learning rate at optimizer step `step` (0-based): linear warm-up over `warmup` steps to
/// `base`, then cosine decay to 0 at `total`.
pub fn lr_at(step: usize, total: usize, warmup: usize, base: f64) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let t = ((step - warmup) as f64 / span as f64).min(1.0);
    base * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

/// One epoch of the training log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub val_mcc: f64,
    pub val_auc: f64,
    pub seconds: f64,
}

impl EpochRecord {
    /// `(name, value)` pairs for the trackers.
    pub fn scalars(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("lr", self.lr),
            ("train/loss", self.train_loss),
            ("val/loss", self.val_loss),
            ("val/accuracy", self.val_accuracy),
            ("val/mcc", self.val_mcc),
            ("val/auc", self.val_auc),
            ("epoch_seconds", self.seconds),
        ]
    }
}

/// A trained, calibrated head and how it got there.
#[derive(Debug)]
pub struct Trained<B: Backend> {
    pub head: Head<B>,
    pub history: Vec<EpochRecord>,
    /// 1-based epoch whose weights were kept.
    pub best_epoch: usize,
    pub temperature: f64,
    /// Decision threshold on calibrated probabilities, folded into served answers.
    pub threshold: f64,
    /// Validation metrics of the served answers.
    pub val_metrics: BinaryMetrics,
    pub val_score: ScoreSummary,
}

/// Trains a head; `on_epoch` sees each epoch's record and may abort training by returning an
/// error (the error is returned unchanged).
pub fn train_head<B: AutodiffBackend>(
    train: &FeatureSet,
    val: &FeatureSet,
    s: &TrainSettings,
    device: &B::Device,
    on_epoch: &mut dyn FnMut(&EpochRecord) -> Result<()>,
) -> Result<Trained<B::InnerBackend>> {
    s.validate()?;
    train.check("train")?;
    val.check("validation")?;
    if train.dim != val.dim {
        bail!(
            "train features have width {} but validation features {}",
            train.dim,
            val.dim
        );
    }
    let (n, d) = (train.len(), train.dim);
    let n_pos = train.labels.iter().filter(|&&y| y == 1).count();
    if n_pos == 0 || n_pos == n {
        bail!("the train set holds only one class ({n_pos} of {n} are roadwork); both are needed");
    }
    if val.labels.iter().all(|&y| y == val.labels[0]) {
        bail!("the validation set holds only one class; early stopping and calibration need both");
    }
    let kind = s.head;
    let mut rng = ChaCha8Rng::seed_from_u64(s.train.seed);
    let mut head: Head<B> = Head::init(kind, d, &mut rng, device);
    let mut optim = AdamWConfig::new()
        .with_weight_decay(s.train.weight_decay as f32)
        .init::<B, Head<B>>();

    // Balanced class weights n / (2 n_c), as sklearn's `class_weight="balanced"`.
    let w_class = [
        n as f32 / (2.0 * (n - n_pos) as f32),
        n as f32 / (2.0 * n_pos as f32),
    ];
    let eps = s.train.label_smoothing as f32;
    let x_all = Tensor::<B, 2>::from_data(TensorData::new(train.x.clone(), [n, d]), device);
    let bs = s.train.batch_size.min(n);
    let steps_per_epoch = n.div_ceil(bs);
    let total = steps_per_epoch * s.train.epochs;
    let warmup = steps_per_epoch * s.train.warmup_epochs.min(s.train.epochs);
    let hidden = match kind {
        HeadKind::Mlp { hidden } => hidden,
        HeadKind::Linear => 0,
    };

    let mut order: Vec<usize> = (0..n).collect();
    let mut history = Vec::new();
    let mut best: Option<(f64, f64, usize, Head<B::InnerBackend>)> = None;
    let mut step = 0usize;
    for epoch in 1..=s.train.epochs {
        let t0 = std::time::Instant::now();
        order.shuffle(&mut rng);
        let mut loss_sum = 0.0;
        let mut lr = 0.0;
        for batch in order.chunks(bs) {
            let m = batch.len();
            let idx: Vec<i64> = batch.iter().map(|&i| i as i64).collect();
            let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [m]), device);
            let x = x_all.clone().select(0, idx);
            let mut targets = Vec::with_capacity(m * 2);
            let mut weights = Vec::with_capacity(m);
            for &i in batch {
                let y = usize::from(train.labels[i]);
                for c in 0..2 {
                    let hot = if c == y { 1.0 } else { 0.0 };
                    targets.push(hot * (1.0 - eps) + eps / 2.0);
                }
                weights.push(w_class[y]);
            }
            let w_sum: f32 = weights.iter().sum();
            let targets = Tensor::<B, 2>::from_data(TensorData::new(targets, [m, 2]), device);
            let weights = Tensor::<B, 2>::from_data(TensorData::new(weights, [m, 1]), device);
            let mask = if hidden > 0 && s.dropout > 0.0 {
                Some(dropout_mask::<B>(
                    &mut rng,
                    [m, hidden],
                    1.0 - s.dropout,
                    device,
                ))
            } else {
                None
            };
            let logits = head.forward_masked(x, mask);
            let logp = activation::log_softmax(logits, 1);
            let per_row = (logp * targets).sum_dim(1).neg() * weights;
            let loss = per_row.sum().div_scalar(w_sum);
            loss_sum += loss.clone().into_scalar().elem::<f64>() * m as f64;
            let grads = GradientsParams::from_grads(loss.backward(), &head);
            lr = lr_at(step, total, warmup, s.train.lr);
            head = optim.step(lr, head, grads);
            step += 1;
        }
        let valid = head.valid();
        let margins = valid.margins(&val.x, device)?;
        let probs: Vec<f64> = margins.iter().map(|&z| metrics::sigmoid(z)).collect();
        let vm = BinaryMetrics::compute(&val.labels, &probs);
        let rec = EpochRecord {
            epoch,
            lr,
            train_loss: loss_sum / n as f64,
            val_loss: metrics::calibration::nll_at_temperature(&margins, &val.labels, 1.0),
            val_accuracy: vm.accuracy,
            val_mcc: vm.mcc,
            val_auc: vm.roc_auc.unwrap_or(0.0),
            seconds: t0.elapsed().as_secs_f64(),
        };
        on_epoch(&rec)?;
        let improved = match &best {
            None => true,
            Some((mcc, loss, _, _)) => {
                rec.val_mcc > *mcc + 1e-12 || (rec.val_mcc >= *mcc - 1e-12 && rec.val_loss < *loss)
            }
        };
        if improved {
            best = Some((rec.val_mcc, rec.val_loss, epoch, valid));
        }
        history.push(rec);
        let best_epoch = best.as_ref().map_or(epoch, |b| b.2);
        if s.train.patience > 0 && epoch - best_epoch >= s.train.patience {
            break;
        }
    }
    let (_, _, best_epoch, head) = best.expect("at least one epoch ran");
    let (temperature, threshold, val_metrics, val_score) = calibrate(&head, val, s, device)?;
    Ok(Trained {
        head,
        history,
        best_epoch,
        temperature,
        threshold,
        val_metrics,
        val_score,
    })
}

/// Fits the temperature (NLL) and the score-maximising threshold on `val`, returning
/// `(temperature, threshold, metrics of served answers, simulated score of served answers)`.
pub fn calibrate<B: Backend>(
    head: &Head<B>,
    val: &FeatureSet,
    s: &TrainSettings,
    device: &B::Device,
) -> Result<(f64, f64, BinaryMetrics, ScoreSummary)> {
    let margins = head.margins(&val.x, device)?;
    let temperature = metrics::fit_temperature(&margins, &val.labels);
    let items: Vec<ScoreItem> = margins
        .iter()
        .enumerate()
        .map(|(i, &z)| ScoreItem {
            label: val.labels[i],
            synthetic: val.synthetic[i],
            level: val.levels[i],
            prob: metrics::sigmoid(z / temperature),
        })
        .collect();
    let n_seq = s.score_sequences.max(1);
    let (threshold, _) = metrics::choose_threshold(&items, s.level_probs, n_seq, s.train.seed)?;
    let served: Vec<f64> = margins
        .iter()
        .map(|&z| served_probability(z, temperature, threshold))
        .collect();
    let served_items: Vec<ScoreItem> = items
        .iter()
        .zip(&served)
        .map(|(it, &p)| ScoreItem { prob: p, ..*it })
        .collect();
    let score =
        metrics::simulate_scores(&served_items, s.level_probs, n_seq, s.train.seed ^ 0x5eed)?;
    Ok((
        temperature,
        threshold,
        BinaryMetrics::compute(&val.labels, &served),
        score,
    ))
}

/// An inverted-dropout mask of `shape`: each entry `1/keep` with probability `keep`, else 0,
/// drawn row-major from `rng` (the order the head's and the fine-tune's seeded runs rely on).
pub(crate) fn dropout_mask<B: Backend>(
    rng: &mut impl Rng,
    shape: [usize; 2],
    keep: f64,
    device: &B::Device,
) -> Tensor<B, 2> {
    let v: Vec<f32> = (0..shape[0] * shape[1])
        .map(|_| {
            if rng.random::<f64>() < keep {
                (1.0 / keep) as f32
            } else {
                0.0
            }
        })
        .collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}
