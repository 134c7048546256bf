//! `sv72 bench`: backbone forward throughput, memory and the per-image decode + preprocess
//! cost, so a miner can size a box (issue #11). A real snapshot is measured as is; without
//! weights a random model of a named size ([`SIZES`]) is written to a temporary folder first
//! (random weights run exactly as fast as trained ones).
//!
//! Speed figures are only meaningful as ratios against an anchor run in the same window
//! (`tools/bench_torch_vit.py` takes the same options); every line also reports CPU time over
//! wall time, so a run that should use N cores but uses one shows it.
//!
//! [`train`] (`--train lora|full`) times fine-tuning optimiser steps instead
//! (`tools/bench_torch_finetune.py` is its anchor).

pub mod snapshot;
pub mod train;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::backend::{on_device, OnBackend};
use crate::config::{Device, Dtype};
use crate::model::preprocess::Preprocess;
use crate::model::{Backbone, LoadOptions};

pub use snapshot::{write_random_snapshot, SIZES};
pub use train::{TrainBenchOptions, TrainBenchReport};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// A snapshot folder, or a named size from [`SIZES`].
    pub backbone: String,
    pub device: Device,
    pub dtype: Dtype,
    pub batches: Vec<usize>,
    /// Square input side in pixels.
    pub image_size: usize,
    /// Measuring time per batch size (after warm-up).
    pub secs: f64,
    /// Images decoded and preprocessed for the per-image cost.
    pub decode_images: usize,
}

/// One batch size's figures.
#[derive(Debug, Clone, Serialize)]
pub struct BatchResult {
    pub batch: usize,
    pub iters: usize,
    /// Median over the timed iterations.
    pub ms_per_batch: f64,
    pub images_per_s: f64,
    /// Process CPU time over wall time while timing (≈ cores busy).
    pub cores_used: f64,
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub backbone: String,
    /// The weights measured: a snapshot folder, or `random <size>`.
    pub weights: String,
    pub device: String,
    pub threads: usize,
    pub image_size: usize,
    pub load_s: f64,
    /// JPEG decode (libjpeg-turbo, as PIL) per image, median, ms.
    pub decode_ms_per_image: f64,
    /// The snapshot's processor (resize, crop, normalise) per image, median, ms.
    pub preprocess_ms_per_image: f64,
    pub batches: Vec<BatchResult>,
    /// Peak resident memory of the process (VmHWM), MiB; host memory only.
    pub peak_rss_mib: f64,
}

/// Runs the benchmark. On the CPU, f32 or bf16 (projection weights in bf16, see
/// [`crate::model::kernels::bf16`]; refused on a CPU without AMX-BF16/AVX512-BF16); f16 runs
/// on CUDA only and a CPU run asked for it is refused rather than silently measured in f32.
pub fn run(opts: &BenchOptions) -> Result<BenchReport> {
    cpu_dtype_supported(opts.device, opts.dtype)?;
    if opts.batches.is_empty() || opts.batches.contains(&0) {
        bail!("--batch: give one or more batch sizes >= 1, e.g. --batch 1,8,32");
    }
    let (dir, weights, _tmp) = resolve(&opts.backbone)?;
    let (decode_ms, preprocess_ms) = decode_cost(&dir, opts.decode_images.max(1))?;
    let job = Job {
        dir: dir.clone(),
        opts: opts.clone(),
    };
    let (device, load_s, batches) = on_device(opts.device, opts.dtype, job)?;
    Ok(BenchReport {
        backbone: opts.backbone.clone(),
        weights,
        device,
        threads: rayon::current_num_threads(),
        image_size: opts.image_size,
        load_s,
        decode_ms_per_image: decode_ms,
        preprocess_ms_per_image: preprocess_ms,
        batches,
        peak_rss_mib: peak_rss_mib(),
    })
}

/// Refuses a CPU dtype the CPU backend cannot run (f16; bf16 without AMX/AVX512-BF16).
pub fn cpu_dtype_supported(device: Device, dtype: Dtype) -> Result<()> {
    match (device, dtype) {
        (Device::Cpu, Dtype::F16) => bail!(
            "--dtype f16 on --device cpu: the CPU backend runs f32 or bf16; use --dtype f32 or bf16, or --device cuda for f16"
        ),
        (Device::Cpu, Dtype::Bf16) if crate::model::kernels::bf16::engine().is_none() => {
            bail!("--dtype bf16 on --device cpu: {}", crate::model::kernels::bf16::UNAVAILABLE)
        }
        _ => Ok(()),
    }
}

/// A temporary folder removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The snapshot to load: the folder given, or a random one of a named size.
fn resolve(backbone: &str) -> Result<(PathBuf, String, Option<TempDir>)> {
    let path = Path::new(backbone);
    if path.join("config.json").is_file() {
        return Ok((path.to_path_buf(), backbone.to_string(), None));
    }
    if SIZES.iter().any(|s| s.name == backbone) {
        let dir =
            std::env::temp_dir().join(format!("sv72-bench-{backbone}-{}", std::process::id()));
        let tmp = TempDir(dir.clone());
        write_random_snapshot(backbone, &dir)?;
        return Ok((dir, format!("random {backbone}"), Some(tmp)));
    }
    let names: Vec<&str> = SIZES.iter().map(|s| s.name).collect();
    bail!(
        "--backbone {backbone:?}: not a snapshot folder (no config.json) and not a named size; \
         give a snapshot folder or one of {}",
        names.join(", ")
    )
}

/// Median decode and preprocess time per image, ms, over `count` synthetic 640×480 street-ish
/// JPEGs (quality 90, as a validator's PIL encodes them).
fn decode_cost(dir: &Path, count: usize) -> Result<(f64, f64)> {
    let pre = Preprocess::from_snapshot(dir)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(72);
    let (mut dec, mut prep) = (Vec::new(), Vec::new());
    for _ in 0..count {
        let img = image::RgbImage::from_fn(640, 480, |x, y| {
            let n: u8 = rng.random();
            image::Rgb([
                (x / 3) as u8 ^ (n >> 3),
                (y / 2) as u8,
                ((x + y) / 5) as u8 ^ (n >> 4),
            ])
        });
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(&img)
            .context("encoding the synthetic benchmark JPEG")?;
        let t = Instant::now();
        let rgb = crate::data::decode::decode_rgb_any(&jpeg)?;
        dec.push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(pre.pixel_values_rgb(&rgb));
        prep.push(t.elapsed());
    }
    Ok((median_ms(&mut dec), median_ms(&mut prep)))
}

fn median_ms(v: &mut [Duration]) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

struct Job {
    dir: PathBuf,
    opts: BenchOptions,
}

impl OnBackend for Job {
    type Out = (String, f64, Vec<BatchResult>);

    fn run<B: Backend>(self, device: &B::Device, device_name: &str) -> Result<Self::Out> {
        let t = Instant::now();
        let opts = LoadOptions::inference(self.opts.dtype);
        let model = Backbone::<B>::load_with(&self.dir, device, opts)?;
        let device_name = match (device_name, opts.bf16) {
            ("cpu", true) => "cpu-bf16",
            (name, _) => name,
        };
        let load_s = t.elapsed().as_secs_f64();
        let s = self.opts.image_size;
        let mut out = Vec::new();
        for &batch in &self.opts.batches {
            let x =
                Tensor::<B, 4>::random([batch, 3, s, s], Distribution::Normal(0.0, 1.0), device);
            // Reading one value back waits for the whole forward on an asynchronous device.
            let step = || -> Result<()> {
                let h = model.try_forward(x.clone())?;
                std::hint::black_box(h.narrow(1, 0, 1).narrow(2, 0, 1).into_data());
                Ok(())
            };
            for _ in 0..2 {
                step()?;
            }
            let mut times = Vec::new();
            let (wall0, cpu0) = (Instant::now(), cpu_time());
            while times.len() < 3 || wall0.elapsed().as_secs_f64() < self.opts.secs {
                let t = Instant::now();
                step()?;
                times.push(t.elapsed());
            }
            let (wall, cpu) = (wall0.elapsed().as_secs_f64(), cpu_time() - cpu0);
            let ms = median_ms(&mut times);
            out.push(BatchResult {
                batch,
                iters: times.len(),
                ms_per_batch: ms,
                images_per_s: batch as f64 * 1e3 / ms,
                cores_used: cpu / wall,
            });
        }
        Ok((device_name.to_string(), load_s, out))
    }
}

/// User + system CPU time of the whole process, seconds.
pub fn cpu_time() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
        tv(u.ru_utime) + tv(u.ru_stime)
    }
}

/// Peak resident set (`VmHWM` of /proc/self/status), MiB; 0 where unavailable.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

impl BenchReport {
    /// The human-readable table `sv72 bench` prints.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "backbone {} ({}), {}, {} threads, {}x{} input, load {:.2} s\n\
             decode {:.2} ms/image, preprocess {:.2} ms/image (median)\n\
             {:>6} {:>12} {:>10} {:>8} {:>6}\n",
            self.backbone,
            self.weights,
            self.device,
            self.threads,
            self.image_size,
            self.image_size,
            self.load_s,
            self.decode_ms_per_image,
            self.preprocess_ms_per_image,
            "batch",
            "ms/batch",
            "images/s",
            "cores",
            "iters"
        );
        for b in &self.batches {
            s += &format!(
                "{:>6} {:>12.1} {:>10.2} {:>8.2} {:>6}\n",
                b.batch, b.ms_per_batch, b.images_per_s, b.cores_used, b.iters
            );
        }
        s += &format!("peak host memory {:.0} MiB\n", self.peak_rss_mib);
        s
    }
}
