//! `sv72 bench --train lora|full`: fine-tuning throughput, so a miner can size a box for
//! `sv72 finetune` (issue #14). Times whole optimiser steps of the finetune
//! [`Trainer`](crate::train::finetune::Trainer) — forward, backward, gradient clipping and
//! AdamW — on random pixel batches; the augmentation and decoding that feed a real run are
//! left out (they run beside the step and `sv72 bench` without `--train` times them).
//!
//! The anchor is `tools/bench_torch_finetune.py` (PyTorch + PEFT, the same options).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::{cpu_time, median_ms, peak_rss_mib, resolve};
use crate::backend::{on_device, OnBackend};
use crate::config::{Device, Dtype, FinetuneConfig};
use crate::model::weights::Weights;
use crate::model::NamedTensors;
use crate::train::finetune::optim::AdamW;
use crate::train::finetune::{model, Trainer};
use crate::train::head::HeadKind;

/// What to measure.
#[derive(Debug, Clone)]
pub struct TrainBenchOptions {
    /// A snapshot folder, or a named size from [`SIZES`](super::SIZES).
    pub backbone: String,
    pub device: Device,
    pub dtype: Dtype,
    /// The fine-tune settings (LoRA rank, layer decay, checkpointing, …); `mode` and
    /// `batch_size` are the ones measured.
    pub finetune: FinetuneConfig,
    pub head: HeadKind,
    /// Square input side in pixels.
    pub image_size: usize,
    /// Untimed optimiser steps first (allocator and autotune warm-up).
    pub warmup_steps: usize,
    /// Timed optimiser steps.
    pub steps: usize,
}

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct TrainBenchReport {
    pub backbone: String,
    /// The weights measured: a snapshot folder, or `random <size>`.
    pub weights: String,
    pub device: String,
    pub threads: usize,
    pub mode: String,
    pub batch: usize,
    pub image_size: usize,
    pub trainable_params: usize,
    pub backbone_params: usize,
    pub load_s: f64,
    pub warmup_steps: usize,
    pub steps: usize,
    /// Median over the timed steps.
    pub ms_per_step: f64,
    pub images_per_s: f64,
    /// Process CPU time over wall time while timing (≈ cores busy).
    pub cores_used: f64,
    /// Loss of the last step (finite: the step really ran).
    pub last_loss: f64,
    /// Peak resident memory of the process (VmHWM), MiB; host memory only.
    pub peak_rss_mib: f64,
}

/// Runs the training benchmark. Training on the CPU is f32 only (the bf16 CPU path is
/// inference-only), so a CPU run asked for f16/bf16 is refused rather than measured in f32.
pub fn run(opts: &TrainBenchOptions) -> Result<TrainBenchReport> {
    if opts.device == Device::Cpu && opts.dtype != Dtype::F32 {
        bail!(
            "--dtype {:?} on --device cpu with --train: CPU training runs f32 only (bf16 on the CPU is for inference); use --dtype f32, or --device cuda for f16/bf16",
            opts.dtype
        );
    }
    if opts.finetune.batch_size == 0 {
        bail!("--batch: give one batch size >= 1 for --train, e.g. --batch 32");
    }
    if opts.steps == 0 {
        bail!("--steps: give at least 1 timed optimiser step");
    }
    opts.finetune.validate()?;
    let (dir, weights, _tmp) = resolve(&opts.backbone)?;
    let job = Job {
        dir,
        opts: opts.clone(),
    };
    let m = on_device(opts.device, opts.dtype, job)?;
    Ok(TrainBenchReport {
        backbone: opts.backbone.clone(),
        weights,
        device: m.device,
        threads: rayon::current_num_threads(),
        mode: opts.finetune.mode.name().to_string(),
        batch: opts.finetune.batch_size,
        image_size: opts.image_size,
        trainable_params: m.trainable_params,
        backbone_params: m.backbone_params,
        load_s: m.load_s,
        warmup_steps: opts.warmup_steps,
        steps: opts.steps,
        ms_per_step: m.ms_per_step,
        images_per_s: opts.finetune.batch_size as f64 * 1e3 / m.ms_per_step,
        cores_used: m.cores_used,
        last_loss: m.last_loss,
        peak_rss_mib: peak_rss_mib(),
    })
}

struct Job {
    dir: PathBuf,
    opts: TrainBenchOptions,
}

struct Measured {
    device: String,
    load_s: f64,
    trainable_params: usize,
    backbone_params: usize,
    ms_per_step: f64,
    cores_used: f64,
    last_loss: f64,
}

impl OnBackend for Job {
    type Out = Measured;

    /// Trains on `Autodiff<B>`: the inner backend is the one `--device`/`--dtype` picks.
    fn run<B: Backend>(self, device: &B::Device, device_name: &str) -> Result<Measured> {
        let ft = &self.opts.finetune;
        let t = Instant::now();
        let weights = Weights::open(&self.dir)?;
        let mut rng = ChaCha8Rng::seed_from_u64(ft.seed);
        let (model, plan) = model::build::<Autodiff<B>>(
            &self.dir,
            &weights,
            ft,
            self.opts.head,
            &NamedTensors::new(),
            &mut rng,
            device,
        )?;
        drop(weights);
        let load_s = t.elapsed().as_secs_f64();
        let (trainable_params, backbone_params) = (plan.trainable_params, plan.backbone_params);
        let mut trainer = Trainer::<Autodiff<B>> {
            model,
            plan,
            opt: AdamW::new(ft.weight_decay),
            class_weights: [1.0, 1.0],
            label_smoothing: ft.label_smoothing,
            max_grad_norm: ft.max_grad_norm,
            head_dropout: 0.0,
            device: device.clone(),
        };
        let (n, s) = (ft.batch_size, self.opts.image_size);
        // Fresh pixels every step, so no step reuses a cached result; labels half and half.
        let batch = |i: usize| {
            B::seed(device, 72 + i as u64);
            let x = Tensor::<Autodiff<B>, 4>::random(
                [n, 3, s, s],
                Distribution::Normal(0.0, 1.0),
                device,
            );
            let y: Vec<u8> = (0..n).map(|j| (j % 2) as u8).collect();
            vec![(x, y)]
        };
        let mut last_loss = f64::NAN;
        for i in 0..self.opts.warmup_steps {
            last_loss = trainer.step(batch(i), ft.lr, i as u64)?.loss;
        }
        let mut times = Vec::new();
        let mut cpu = 0.0;
        let mut wall = 0.0;
        for i in 0..self.opts.steps {
            let i = self.opts.warmup_steps + i;
            let micro = batch(i);
            let (t, c) = (Instant::now(), cpu_time());
            // The loss is read back inside the step, which waits for an asynchronous device.
            last_loss = trainer.step(micro, ft.lr, i as u64)?.loss;
            let dt = t.elapsed();
            cpu += cpu_time() - c;
            wall += dt.as_secs_f64();
            times.push(dt);
        }
        Ok(Measured {
            device: device_name.to_string(),
            load_s,
            trainable_params,
            backbone_params,
            ms_per_step: median_ms(&mut times),
            cores_used: cpu / wall.max(1e-9),
            last_loss,
        })
    }
}

impl TrainBenchReport {
    /// The human-readable lines `sv72 bench --train` prints.
    pub fn to_text(&self) -> String {
        format!(
            "finetune {} on {} ({}), {}, {} threads, batch {}, {}x{} input, load {:.2} s\n\
             {} of {} backbone parameters trained (+ head)\n\
             {:>8} {:>10} {:>8} {:>6} {:>10}\n\
             {:>8.1} {:>10.2} {:>8.2} {:>6} {:>10.4}\n\
             peak host memory {:.0} MiB\n",
            self.mode,
            self.backbone,
            self.weights,
            self.device,
            self.threads,
            self.batch,
            self.image_size,
            self.image_size,
            self.load_s,
            self.trainable_params,
            self.backbone_params,
            "ms/step",
            "images/s",
            "cores",
            "steps",
            "last loss",
            self.ms_per_step,
            self.images_per_s,
            self.cores_used,
            self.steps,
            self.last_loss,
            self.peak_rss_mib,
        )
    }
}
