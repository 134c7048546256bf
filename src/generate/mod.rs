//! `sv72 generate`: synthetic training images from image-generation servers, for the prompts
//! `mine-hard` writes (or any prompt list), text-to-image and image-to-image.
//!
//! Output folder:
//! - `images/<prompt id>-<t2i|i2i>-<k>.<ext>`, each written atomically;
//! - `generated.jsonl`, the journal: one line per finished image, appended and fsynced after the
//!   image is in place, so a killed run loses at most the images in flight, and a re-run skips
//!   every image it lists;
//! - `generated.csv`, rebuilt from the journal at the end of every run: what
//!   `sv72 ingest --csv` reads as it is (`path,label,source,generator,…,parent`).
//!
//! Seeds: image `k` of a prompt gets `(prompt seed & 0x7fffffff) + k` (the prompt's own seed, or
//! one derived from `generate.seed` and its id), so a re-run asks for the same images, A1111
//! batches (seed, seed+1, …) line up, and every backend takes the value.

mod a1111;
mod comfyui;
pub mod http;
mod openai;
pub mod prompts;
pub mod stage;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::{GenBackend, GenMode, GenerateConfig};
use crate::util::{fsx, hash::content_hash, hash::stable_u64, progress};

pub use http::Secret;
pub use prompts::{read_prompts, GenPrompt};

/// The journal of finished images.
pub const JOURNAL_FILE: &str = "generated.jsonl";
/// The CSV `sv72 ingest --csv` reads.
pub const CSV_FILE: &str = "generated.csv";
/// Folder of the images inside the output folder.
pub const IMAGES_DIR: &str = "images";
/// Consecutive failures without a single success after which the run stops (a wrong endpoint
/// or model should not be tried once per prompt).
const GIVE_UP_AFTER: usize = 4;

/// Text-to-image or image-to-image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobMode {
    T2i,
    I2i,
}

impl JobMode {
    pub fn as_str(self) -> &'static str {
        match self {
            JobMode::T2i => "t2i",
            JobMode::I2i => "i2i",
        }
    }
}

/// A source image for image-to-image.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    /// Content id (blake3 of the bytes): the manifest id of the parent image.
    pub id: String,
    pub width: u32,
    pub height: u32,
}

/// One request: `count` images of one prompt, seeds `seed`, `seed + 1`, ….
#[derive(Debug, Clone)]
pub struct Job<'a> {
    pub prompt: &'a GenPrompt,
    pub mode: JobMode,
    /// Index of the first image (within the prompt).
    pub first: u32,
    pub count: u32,
    pub seed: u64,
    pub strength: Option<f64>,
    pub source: Option<&'a Source>,
}

impl Job<'_> {
    /// The prompt text with the negative prompt, for servers without one.
    fn prompt_with_avoid(&self) -> String {
        match &self.prompt.negative {
            Some(n) => format!("{}. Avoid: {n}", self.prompt.prompt.trim_end_matches('.')),
            None => self.prompt.prompt.clone(),
        }
    }
}

/// One image a backend returned.
#[derive(Debug, Clone)]
pub struct Image {
    pub bytes: Vec<u8>,
    /// The seed the server used, when it uses seeds.
    pub seed: Option<u64>,
}

/// What one request returned.
#[derive(Debug, Clone)]
pub struct Generated {
    pub images: Vec<Image>,
    /// The model that made them, when the server says.
    pub model: Option<String>,
    /// Cost of the request in US dollars, when the server reports one.
    pub cost_usd: Option<f64>,
}

/// An image-generation server.
pub trait Backend: Sync {
    fn kind(&self) -> GenBackend;
    /// The model name known before any request (config, workflow).
    fn model(&self) -> Option<String>;
    /// Largest batch the backend asks for in one request.
    fn max_batch(&self) -> u32;
    /// Whether it takes a denoising strength for image-to-image.
    fn uses_strength(&self) -> bool;
    fn generate(&self, job: &Job<'_>) -> Result<Generated>;
}

/// Builds the backend `cfg` names.
pub fn backend(cfg: &GenerateConfig, key: Option<Secret>) -> Result<Box<dyn Backend>> {
    let endpoint = cfg
        .endpoint
        .clone()
        .unwrap_or_else(|| cfg.backend.default_endpoint().to_string());
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        bail!("generate.endpoint {endpoint:?} must start with http:// or https://");
    }
    let retry = http::Retry {
        attempts: cfg.attempts.max(1),
        first: Duration::from_millis(cfg.backoff_ms),
        max: Duration::from_millis(cfg.max_backoff_ms.max(cfg.backoff_ms)),
    };
    let timeout = Duration::from_secs(cfg.timeout_s.max(1));
    Ok(match cfg.backend {
        GenBackend::Openai => Box::new(openai::OpenAi::new(cfg, &endpoint, key, timeout, retry)?),
        GenBackend::A1111 => Box::new(a1111::A1111::new(cfg, &endpoint, key, timeout, retry)),
        GenBackend::Comfyui => {
            Box::new(comfyui::ComfyUi::new(cfg, &endpoint, key, timeout, retry)?)
        }
    })
}

/// One line of the journal and one row of `generated.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Relative to the output folder (ingest resolves CSV paths from the CSV's folder).
    pub path: String,
    /// `roadwork` or `none`.
    pub label: String,
    /// Always `synthetic`.
    pub source: String,
    /// `<backend>/<model>`.
    pub generator: String,
    pub prompt: String,
    pub negative_prompt: String,
    pub seed: Option<u64>,
    /// Content id of the i2i source image (its manifest id): ingest puts the image in its
    /// parent's group and split.
    pub parent: Option<String>,
    pub mode: JobMode,
    pub strength: Option<f64>,
    pub prompt_id: String,
    pub index: u32,
    pub backend: String,
    pub model: String,
    pub cost_usd: Option<f64>,
    pub width: u32,
    pub height: u32,
    pub created_at: String,
}

impl Record {
    fn key(&self) -> String {
        job_key(&self.prompt_id, self.mode, self.index)
    }
}

fn job_key(id: &str, mode: JobMode, k: u32) -> String {
    format!("{id}/{}/{k}", mode.as_str())
}

/// What `generate` needs besides the config.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompts: PathBuf,
    pub out: PathBuf,
    /// Label of prompts that carry none.
    pub label: Option<u8>,
    /// Use only the first N prompts.
    pub limit: Option<usize>,
}

/// A job that failed.
#[derive(Debug, Clone)]
pub struct Failure {
    pub prompt_id: String,
    pub mode: JobMode,
    pub images: u32,
    pub error: String,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct GenerateReport {
    pub out: PathBuf,
    pub csv: PathBuf,
    pub prompts: usize,
    /// Images this run asked for.
    pub planned: usize,
    pub generated: usize,
    /// Already in the journal (finished by an earlier run).
    pub skipped_done: usize,
    pub failures: Vec<Failure>,
    /// True when the run stopped early after repeated failures.
    pub gave_up: bool,
    /// Rows in `generated.csv`.
    pub total_rows: usize,
    pub by_mode: BTreeMap<String, usize>,
    /// Summed reported cost of this run's images, when the server reports any.
    pub cost_usd: Option<f64>,
    /// Journal lines that could not be read (a line cut by a kill); their images are redone.
    pub torn_lines: usize,
    pub notes: Vec<String>,
}

impl GenerateReport {
    pub fn failed_images(&self) -> usize {
        self.failures.iter().map(|f| f.images as usize).sum()
    }
}

/// The seed of image 0 of `p`.
pub fn base_seed(p: &GenPrompt, cfg_seed: u64) -> u64 {
    let s = p
        .seed
        .unwrap_or_else(|| stable_u64(&format!("{cfg_seed}|{}", p.id)));
    s & 0x7fff_ffff
}

fn read_journal(path: &Path) -> Result<(Vec<Record>, usize)> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut out = Vec::new();
    let mut torn = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Record>(line) {
            Ok(r) => out.push(r),
            Err(_) => torn += 1,
        }
    }
    Ok((out, torn))
}

/// Appends one record and fsyncs, so a record is never listed before its image is complete.
fn append_journal(path: &Path, r: &Record) -> Result<()> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut line = serde_json::to_string(r)?;
    line.push('\n');
    f.write_all(line.as_bytes())
        .and_then(|_| f.sync_data())
        .with_context(|| format!("cannot append to {}", path.display()))
}

fn write_csv(path: &Path, rows: &[Record]) -> Result<()> {
    fsx::write_atomic_with(path, |w| {
        let mut cw = csv::Writer::from_writer(w);
        if rows.is_empty() {
            cw.write_record([
                "path",
                "label",
                "source",
                "generator",
                "prompt",
                "negative_prompt",
                "seed",
                "parent",
                "mode",
                "strength",
                "prompt_id",
                "index",
                "backend",
                "model",
                "cost_usd",
                "width",
                "height",
                "created_at",
            ])?;
        }
        for r in rows {
            cw.serialize(r)?;
        }
        cw.flush()?;
        Ok(())
    })
}

fn load_source(path: &Path) -> Result<Source> {
    let bytes = fs::read(path)
        .with_context(|| format!("cannot read the source image {}", path.display()))?;
    let (width, height, _) =
        http::check_image_bytes(&bytes, &format!("source image {}", path.display()))?;
    Ok(Source {
        path: path.to_path_buf(),
        id: content_hash(&bytes),
        bytes,
        width,
        height,
    })
}

/// Which mode a prompt is generated in.
fn mode_for(p: &GenPrompt, mode: GenMode) -> Result<JobMode> {
    Ok(match mode {
        GenMode::T2i => JobMode::T2i,
        GenMode::I2i if p.image.is_some() => JobMode::I2i,
        GenMode::I2i => bail!(
            "--mode i2i: prompt {} has no source image (`image` field)",
            p.id
        ),
        GenMode::Auto if p.image.is_some() && p.label_known => JobMode::I2i,
        GenMode::Auto => JobMode::T2i,
    })
}

struct Planned<'a> {
    prompt: &'a GenPrompt,
    mode: JobMode,
    first: u32,
    count: u32,
    seed: u64,
}

/// Runs `sv72 generate`.
pub fn run(
    req: &GenerateRequest,
    cfg: &GenerateConfig,
    key: Option<Secret>,
) -> Result<GenerateReport> {
    let mut prompts = read_prompts(&req.prompts, req.label)?;
    if let Some(n) = req.limit {
        prompts.truncate(n);
    }
    let backend = backend(cfg, key)?;
    let modes: Vec<JobMode> = prompts
        .iter()
        .map(|p| mode_for(p, cfg.mode))
        .collect::<Result<_>>()?;
    let out = &req.out;
    fs::create_dir_all(out.join(IMAGES_DIR))
        .with_context(|| format!("cannot create {}", out.join(IMAGES_DIR).display()))?;
    let journal = out.join(JOURNAL_FILE);
    let (mut records, torn) = read_journal(&journal)?;
    let done: HashSet<String> = records.iter().map(Record::key).collect();

    let mut report = GenerateReport {
        out: out.clone(),
        csv: out.join(CSV_FILE),
        prompts: prompts.len(),
        torn_lines: torn,
        ..Default::default()
    };
    let batch = cfg.batch.clamp(1, backend.max_batch().max(1));
    let mut plan: Vec<Planned<'_>> = Vec::new();
    for (p, &mode) in prompts.iter().zip(&modes) {
        let base = base_seed(p, cfg.seed);
        let missing: Vec<u32> = (0..cfg.images_per_prompt)
            .filter(|&k| !done.contains(&job_key(&p.id, mode, k)))
            .collect();
        report.skipped_done += cfg.images_per_prompt as usize - missing.len();
        // Runs of consecutive missing indices, cut into batches (seeds within a batch follow on).
        let mut i = 0;
        while i < missing.len() {
            let first = missing[i];
            let mut count = 1;
            while i + (count as usize) < missing.len()
                && missing[i + count as usize] == first + count
                && count < batch
            {
                count += 1;
            }
            plan.push(Planned {
                prompt: p,
                mode,
                first,
                count,
                seed: base + u64::from(first),
            });
            i += count as usize;
        }
    }
    report.planned = plan.iter().map(|j| j.count as usize).sum();

    // Source images, read once per prompt.
    let mut sources: BTreeMap<String, std::result::Result<Source, String>> = BTreeMap::new();
    for j in plan.iter().filter(|j| j.mode == JobMode::I2i) {
        if let Some(img) = &j.prompt.image {
            sources
                .entry(j.prompt.id.clone())
                .or_insert_with(|| load_source(img).map_err(|e| format!("{e:#}")));
        }
    }

    let bar = progress::bar(report.planned as u64, "generate");
    let queue = Mutex::new(plan.into_iter().collect::<VecDeque<_>>());
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<std::result::Result<Vec<Record>, Failure>>();
    let workers = cfg.concurrency.clamp(1, 64);
    let now = || chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let model_known = backend.model();
    let backend_ref: &dyn Backend = backend.as_ref();
    let out_ref: &Path = out;
    let mut consecutive_failures = 0usize;
    let mut any_success = false;
    std::thread::scope(|scope| -> Result<()> {
        for _ in 0..workers {
            let tx = tx.clone();
            let (queue, stop, sources) = (&queue, &stop, &sources);
            let model_known = model_known.clone();
            scope.spawn(move || loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Some(j) = queue.lock().ok().and_then(|mut q| q.pop_front()) else {
                    return;
                };
                let res = run_job(
                    backend_ref,
                    &j,
                    sources,
                    cfg,
                    model_known.as_deref(),
                    out_ref,
                    &now,
                );
                let msg = res.map_err(|e| Failure {
                    prompt_id: j.prompt.id.clone(),
                    mode: j.mode,
                    images: j.count,
                    error: format!("{e:#}"),
                });
                if tx.send(msg).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        for msg in rx {
            match msg {
                Ok(recs) => {
                    any_success = true;
                    consecutive_failures = 0;
                    for r in recs {
                        append_journal(&journal, &r)?;
                        report.generated += 1;
                        *report
                            .by_mode
                            .entry(r.mode.as_str().to_string())
                            .or_default() += 1;
                        if let Some(c) = r.cost_usd {
                            *report.cost_usd.get_or_insert(0.0) += c;
                        }
                        records.push(r);
                        bar.inc(1);
                    }
                }
                Err(f) => {
                    bar.inc(u64::from(f.images));
                    bar.suspend(|| {
                        eprintln!(
                            "generate: prompt {} ({}): {}",
                            f.prompt_id,
                            f.mode.as_str(),
                            f.error
                        )
                    });
                    report.failures.push(f);
                    consecutive_failures += 1;
                    if !any_success && consecutive_failures >= GIVE_UP_AFTER {
                        stop.store(true, Ordering::Relaxed);
                        report.gave_up = true;
                    }
                }
            }
        }
        Ok(())
    })?;
    bar.finish_and_clear();

    // The CSV lists every finished image, the prompt file's order first.
    let order: BTreeMap<&str, usize> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.as_str(), i))
        .collect();
    let mut seen = HashSet::new();
    records.retain(|r| seen.insert(r.key()));
    records.sort_by(|a, b| {
        let oa = order
            .get(a.prompt_id.as_str())
            .copied()
            .unwrap_or(usize::MAX);
        let ob = order
            .get(b.prompt_id.as_str())
            .copied()
            .unwrap_or(usize::MAX);
        (oa, &a.prompt_id, a.mode, a.index).cmp(&(ob, &b.prompt_id, b.mode, b.index))
    });
    write_csv(&report.csv, &records)?;
    report.total_rows = records.len();
    if backend_ref.kind() == GenBackend::Openai && modes.contains(&JobMode::I2i) {
        report.notes.push(
            "the OpenAI images API takes no strength: image-to-image edits record none".into(),
        );
    }
    Ok(report)
}

#[allow(clippy::type_complexity)]
fn run_job(
    backend: &dyn Backend,
    j: &Planned<'_>,
    sources: &BTreeMap<String, std::result::Result<Source, String>>,
    cfg: &GenerateConfig,
    model_known: Option<&str>,
    out: &Path,
    now: &dyn Fn() -> String,
) -> Result<Vec<Record>> {
    let source = match j.mode {
        JobMode::T2i => None,
        JobMode::I2i => match sources.get(&j.prompt.id) {
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => bail!("{e}"),
            None => bail!("prompt {} has no source image", j.prompt.id),
        },
    };
    let strength = (j.mode == JobMode::I2i && backend.uses_strength())
        .then(|| j.prompt.strength.unwrap_or(cfg.strength));
    let job = Job {
        prompt: j.prompt,
        mode: j.mode,
        first: j.first,
        count: j.count,
        seed: j.seed,
        strength,
        source,
    };
    let g = backend.generate(&job)?;
    if g.images.len() < j.count as usize {
        bail!(
            "the server returned {} image(s) for {} asked",
            g.images.len(),
            j.count
        );
    }
    let model = g
        .model
        .clone()
        .or_else(|| model_known.map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    let kind = backend.kind().as_str();
    let cost = g.cost_usd.map(|c| c / j.count as f64);
    let mut recs = Vec::new();
    for (i, img) in g.images.iter().take(j.count as usize).enumerate() {
        let k = j.first + i as u32;
        let (w, h, ext) = http::check_image_bytes(&img.bytes, "generated image")?;
        let rel = format!(
            "{IMAGES_DIR}/{}-{}-{k:03}.{ext}",
            j.prompt.id,
            j.mode.as_str()
        );
        fsx::write_atomic(&out.join(&rel), &img.bytes)?;
        recs.push(Record {
            path: rel,
            label: if j.prompt.label == 1 {
                "roadwork"
            } else {
                "none"
            }
            .into(),
            source: "synthetic".into(),
            generator: format!("{kind}/{model}"),
            prompt: j.prompt.prompt.clone(),
            negative_prompt: j.prompt.negative.clone().unwrap_or_default(),
            seed: img.seed,
            parent: source.map(|s| s.id.clone()),
            mode: j.mode,
            strength,
            prompt_id: j.prompt.id.clone(),
            index: k,
            backend: kind.into(),
            model: model.clone(),
            cost_usd: cost,
            width: w,
            height: h,
            created_at: now(),
        });
    }
    Ok(recs)
}

/// The closing summary.
pub fn format_report(r: &GenerateReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "generate: {} prompt(s) -> {}",
        r.prompts,
        r.out.display()
    );
    let _ = writeln!(
        s,
        "  images: {} generated, {} already done, {} failed (of {} asked this run)",
        r.generated,
        r.skipped_done,
        r.failed_images(),
        r.planned
    );
    for (m, n) in &r.by_mode {
        let _ = writeln!(s, "  {m}: {n}");
    }
    match r.cost_usd {
        Some(c) => {
            let _ = writeln!(
                s,
                "  reported cost: ${c:.4} (${:.4} per image)",
                c / r.generated.max(1) as f64
            );
        }
        None => {
            let _ = writeln!(s, "  reported cost: none (the server reports no cost)");
        }
    }
    if r.torn_lines > 0 {
        let _ = writeln!(
            s,
            "  {} cut journal line(s) ignored (their images were redone)",
            r.torn_lines
        );
    }
    for n in &r.notes {
        let _ = writeln!(s, "  note: {n}");
    }
    if r.gave_up {
        let _ = writeln!(
            s,
            "  stopped after {} failures without a success",
            r.failures.len()
        );
    }
    let _ = writeln!(
        s,
        "  {} row(s) in {}: `sv72 ingest --name <NAME> --csv {}`",
        r.total_rows,
        r.csv.display(),
        r.csv.display()
    );
    s
}
