//! Inference: the `Predictor` trait, the hot-swappable `ModelSlot`, and dynamic micro-batching
//! of concurrent requests on one dedicated thread, highest stake first.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use image::RgbImage;
use tokio::sync::oneshot;

use super::metrics::{log_event, Metrics};

/// A model that scores images: probability of roadwork in [0, 1], one per image.
///
/// Preprocessing (resize, normalise) is the predictor's job. It runs on the inference thread
/// only, so it must be `Send` but need not be `Sync`.
pub trait Predictor: Send {
    /// Scores a batch; must return exactly `images.len()` values.
    fn predict(&mut self, images: &[RgbImage]) -> Result<Vec<f32>>;
    /// A label for metrics and logs (e.g. export name + content hash).
    fn version(&self) -> String;
}

/// Builds a predictor from a deployed model path (the hot-swap loader).
pub type Loader = dyn Fn(&Path) -> Result<Box<dyn Predictor>> + Send + Sync;

/// The predictor in service; swapped whole between batches.
pub struct ModelSlot {
    current: Mutex<Box<dyn Predictor>>,
    version: Mutex<String>,
    metrics: Arc<Metrics>,
}

impl ModelSlot {
    /// A slot serving `p`.
    pub fn new(p: Box<dyn Predictor>, metrics: Arc<Metrics>) -> Arc<Self> {
        let v = p.version();
        metrics.set_model_version(&v);
        Arc::new(Self {
            current: Mutex::new(p),
            version: Mutex::new(v),
            metrics,
        })
    }

    /// The metrics this slot reports to.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Version of the predictor in service.
    pub fn version(&self) -> String {
        self.version
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn lock(&self) -> MutexGuard<'_, Box<dyn Predictor>> {
        // A panic inside predict is caught by the batcher; the box itself is still usable.
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks `new` on a probe image, then swaps it in; on any failure (error, panic, wrong
    /// count, non-finite output) the old predictor keeps serving and the error is returned.
    pub fn try_swap(&self, mut new: Box<dyn Predictor>) -> Result<String> {
        let probe = vec![RgbImage::from_pixel(224, 224, image::Rgb([128, 128, 128]))];
        let out = catch_unwind(AssertUnwindSafe(|| new.predict(&probe)))
            .map_err(|p| {
                anyhow::anyhow!("new model panicked on the probe image: {}", panic_text(&p))
            })?
            .context("new model failed on the probe image")?;
        if out.len() != 1 || !out[0].is_finite() {
            bail!("new model gave {out:?} for one probe image; expected one finite number");
        }
        let v = new.version();
        let old = std::mem::replace(&mut *self.lock(), new);
        *self.version.lock().unwrap_or_else(|e| e.into_inner()) = v.clone();
        self.metrics.set_model_version(&v);
        // Dropped outside the lock so a slow destructor does not stall inference.
        drop(old);
        Ok(v)
    }

    /// Loads with `loader` beside the old model (catching panics) and swaps if it probes well.
    pub fn reload(&self, loader: &Loader, path: &Path) -> Result<String> {
        let new = catch_unwind(AssertUnwindSafe(|| loader(path)))
            .map_err(|p| anyhow::anyhow!("model loader panicked: {}", panic_text(&p)))?
            .with_context(|| format!("cannot load model {}", path.display()))?;
        self.try_swap(new)
    }

    /// Watches `path` (a file or folder: names, sizes, mtimes) every `interval`; when it changed
    /// and then stayed the same for one more interval, reloads. Stops when `stop` is set.
    pub fn watch(
        self: &Arc<Self>,
        path: PathBuf,
        loader: Arc<Loader>,
        interval: Duration,
        stop: Arc<AtomicBool>,
    ) -> JoinHandle<()> {
        let slot = self.clone();
        std::thread::Builder::new()
            .name("sv72-model-watch".into())
            .spawn(move || {
                let mut served = fingerprint(&path);
                let mut pending: Option<u64> = None;
                while !stop.load(Ordering::Relaxed) {
                    sleep_unless(&stop, interval);
                    let now = fingerprint(&path);
                    if now == served || now == 0 {
                        pending = None;
                        continue;
                    }
                    if pending != Some(now) {
                        // Changed: wait one interval for the writer to finish.
                        pending = Some(now);
                        continue;
                    }
                    pending = None;
                    served = now;
                    match slot.reload(loader.as_ref(), &path) {
                        Ok(v) => {
                            slot.metrics.model_reloads.fetch_add(1, Ordering::Relaxed);
                            log_event(
                                "info",
                                "model_swapped",
                                serde_json::json!({"path": path.display().to_string(), "version": v}),
                            );
                        }
                        Err(e) => {
                            slot.metrics
                                .model_reload_failures
                                .fetch_add(1, Ordering::Relaxed);
                            log_event(
                                "error",
                                "model_swap_refused",
                                serde_json::json!({
                                    "path": path.display().to_string(),
                                    "error": format!("{e:#}"),
                                    "serving": slot.version(),
                                }),
                            );
                        }
                    }
                }
            })
            .expect("spawning a thread")
    }
}

fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= end {
            break;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// A hash of a path's names, sizes and modification times (0 when it does not exist).
pub fn fingerprint(path: &Path) -> u64 {
    fn walk(p: &Path, rel: &str, h: &mut blake3::Hasher, depth: usize) {
        let Ok(md) = std::fs::metadata(p) else {
            return;
        };
        h.update(rel.as_bytes());
        h.update(&md.len().to_le_bytes());
        let mtime = md
            .modified()
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        h.update(&mtime.to_le_bytes());
        if md.is_dir() && depth < 4 {
            let mut names: Vec<_> = std::fs::read_dir(p)
                .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
                .unwrap_or_default();
            names.sort();
            for n in names {
                let s = n.to_string_lossy();
                if s.starts_with(".sv72-") {
                    continue; // atomic-write temp files
                }
                walk(&p.join(&n), &format!("{rel}/{s}"), h, depth + 1);
            }
        }
    }
    if !path.exists() {
        return 0;
    }
    let mut h = blake3::Hasher::new();
    walk(path, "", &mut h, 0);
    let b = h.finalize();
    u64::from_le_bytes(b.as_bytes()[..8].try_into().expect("8 bytes")).max(1)
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-text panic".into()
    }
}

/// What a request gets back from the inference thread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// The model's score, clamped to [0, 1].
    Scored(f32),
    /// The model failed for this batch; carries the fallback value.
    Fallback(f32),
    /// Dropped from a full queue by a request with more stake.
    Shed,
}

struct Job {
    image: RgbImage,
    enqueued: Instant,
    reply: oneshot::Sender<Outcome>,
}

/// Orders f64 stakes as u64 keys (non-negative finite stakes only reach here).
fn stake_key(stake: f64) -> u64 {
    let b = stake.max(0.0).to_bits();
    if stake.is_nan() {
        0
    } else {
        b
    }
}

struct Queue {
    /// Key: (stake, reversed arrival) so the last entry is the highest stake, earliest first.
    jobs: BTreeMap<(u64, u64), Job>,
    seq: u64,
    closed: bool,
}

/// Batching settings.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    pub max_batch: usize,
    pub max_wait: Duration,
    /// Jobs waiting at most; beyond it the lowest stake is shed.
    pub queue_capacity: usize,
    pub fallback: f32,
}

/// The micro-batcher: a bounded priority queue drained by one inference thread.
pub struct Batcher {
    queue: Mutex<Queue>,
    ready: Condvar,
    opts: BatchOptions,
    metrics: Arc<Metrics>,
}

impl Batcher {
    /// Starts the inference thread over `slot`.
    pub fn start(
        slot: Arc<ModelSlot>,
        opts: BatchOptions,
        metrics: Arc<Metrics>,
    ) -> (Arc<Self>, JoinHandle<()>) {
        let b = Arc::new(Self {
            queue: Mutex::new(Queue {
                jobs: BTreeMap::new(),
                seq: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            opts,
            metrics,
        });
        let worker = b.clone();
        let handle = std::thread::Builder::new()
            .name("sv72-inference".into())
            .spawn(move || worker.run(&slot))
            .expect("spawning a thread");
        (b, handle)
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues an image with priority `stake`. When the queue is full the lowest-stake job
    /// (possibly this one) is answered `Shed`.
    pub fn submit(&self, image: RgbImage, stake: f64) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        let mut q = self.lock();
        if q.closed {
            let _ = tx.send(Outcome::Shed);
            return rx;
        }
        q.seq += 1;
        let key = (stake_key(stake), u64::MAX - q.seq);
        q.jobs.insert(
            key,
            Job {
                image,
                enqueued: Instant::now(),
                reply: tx,
            },
        );
        if q.jobs.len() > self.opts.queue_capacity.max(1) {
            if let Some((_, lowest)) = q.jobs.pop_first() {
                let _ = lowest.reply.send(Outcome::Shed);
            }
        }
        self.metrics
            .queue_depth
            .store(q.jobs.len() as u64, Ordering::Relaxed);
        drop(q);
        self.ready.notify_one();
        rx
    }

    /// Stops taking work; the thread finishes what is queued, then exits.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    fn run(&self, slot: &ModelSlot) {
        let max_batch = self.opts.max_batch.max(1);
        loop {
            let batch: Vec<Job> = {
                let mut q = self.lock();
                while q.jobs.is_empty() && !q.closed {
                    q = self.ready.wait(q).unwrap_or_else(|e| e.into_inner());
                }
                if q.jobs.is_empty() && q.closed {
                    return;
                }
                // Wait for a fuller batch, but never past max_wait from the oldest job.
                let oldest = q.jobs.values().map(|j| j.enqueued).min();
                if let Some(oldest) = oldest {
                    let deadline = oldest + self.opts.max_wait;
                    while q.jobs.len() < max_batch && !q.closed {
                        let now = Instant::now();
                        if now >= deadline {
                            break;
                        }
                        q = self
                            .ready
                            .wait_timeout(q, deadline - now)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                }
                let mut batch = Vec::with_capacity(max_batch);
                while batch.len() < max_batch {
                    let Some((_, job)) = q.jobs.pop_last() else {
                        break;
                    };
                    // The client gave up (timeout, disconnect): skip the work.
                    if !job.reply.is_closed() {
                        batch.push(job);
                    }
                }
                self.metrics
                    .queue_depth
                    .store(q.jobs.len() as u64, Ordering::Relaxed);
                batch
            };
            if batch.is_empty() {
                continue;
            }
            self.run_batch(slot, batch);
        }
    }

    fn run_batch(&self, slot: &ModelSlot, batch: Vec<Job>) {
        let (images, replies): (Vec<RgbImage>, Vec<_>) =
            batch.into_iter().map(|j| (j.image, j.reply)).unzip();
        self.metrics.batch_size.observe(images.len() as f64);
        let result = {
            let mut p = slot.lock();
            catch_unwind(AssertUnwindSafe(|| p.predict(&images)))
        };
        let scores: Result<Vec<f32>, String> = match result {
            Ok(Ok(v)) if v.len() == images.len() => Ok(v),
            Ok(Ok(v)) => Err(format!(
                "predictor returned {} values for {} images",
                v.len(),
                images.len()
            )),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(p) => Err(format!("predictor panicked: {}", panic_text(&p))),
        };
        match scores {
            Ok(v) => {
                for (s, r) in v.into_iter().zip(replies) {
                    let out = if s.is_finite() {
                        Outcome::Scored(s.clamp(0.0, 1.0))
                    } else {
                        self.metrics
                            .predictor_failures
                            .fetch_add(1, Ordering::Relaxed);
                        Outcome::Fallback(self.opts.fallback)
                    };
                    let _ = r.send(out);
                }
            }
            Err(e) => {
                self.metrics
                    .predictor_failures
                    .fetch_add(1, Ordering::Relaxed);
                log_event(
                    "error",
                    "predictor_failed",
                    serde_json::json!({"error": e, "batch": replies.len(), "model": slot.version()}),
                );
                for r in replies {
                    let _ = r.send(Outcome::Fallback(self.opts.fallback));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Const(f32, &'static str);
    impl Predictor for Const {
        fn predict(&mut self, images: &[RgbImage]) -> Result<Vec<f32>> {
            Ok(vec![self.0; images.len()])
        }
        fn version(&self) -> String {
            self.1.into()
        }
    }

    struct Boom;
    impl Predictor for Boom {
        fn predict(&mut self, _: &[RgbImage]) -> Result<Vec<f32>> {
            panic!("boom")
        }
        fn version(&self) -> String {
            "boom".into()
        }
    }

    fn img() -> RgbImage {
        RgbImage::new(4, 4)
    }

    #[test]
    fn full_queue_sheds_lowest_stake() {
        let m = Arc::new(Metrics::new());
        let b = Batcher {
            queue: Mutex::new(Queue {
                jobs: BTreeMap::new(),
                seq: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            opts: BatchOptions {
                max_batch: 2,
                max_wait: Duration::from_millis(1),
                queue_capacity: 2,
                fallback: 0.5,
            },
            metrics: m,
        };
        let mut low = b.submit(img(), 10.0);
        let mut mid = b.submit(img(), 20.0);
        let mut high = b.submit(img(), 30.0);
        assert_eq!(low.try_recv(), Ok(Outcome::Shed));
        assert!(mid.try_recv().is_err() && high.try_recv().is_err());
        let mut lower = b.submit(img(), 1.0);
        assert_eq!(lower.try_recv(), Ok(Outcome::Shed));
        // Highest stake is served first.
        let q = b.lock();
        let order: Vec<u64> = q.jobs.keys().rev().map(|k| k.0).collect();
        assert_eq!(order, vec![stake_key(30.0), stake_key(20.0)]);
    }

    #[test]
    fn panicking_predictor_gives_fallback_and_thread_survives() {
        let m = Arc::new(Metrics::new());
        let slot = ModelSlot::new(Box::new(Boom), m.clone());
        let opts = BatchOptions {
            max_batch: 4,
            max_wait: Duration::from_millis(1),
            queue_capacity: 64,
            fallback: 0.25,
        };
        let (b, h) = Batcher::start(slot.clone(), opts, m.clone());
        for _ in 0..3 {
            let rx = b.submit(img(), 1.0);
            assert_eq!(rx.blocking_recv(), Ok(Outcome::Fallback(0.25)));
        }
        slot.try_swap(Box::new(Const(2.0, "c"))).unwrap();
        assert_eq!(
            b.submit(img(), 1.0).blocking_recv(),
            Ok(Outcome::Scored(1.0))
        );
        b.close();
        h.join().unwrap();
        assert!(m.predictor_failures.load(Ordering::Relaxed) >= 3);
    }

    #[test]
    fn broken_swap_keeps_old_model() {
        let m = Arc::new(Metrics::new());
        let slot = ModelSlot::new(Box::new(Const(0.3, "old")), m);
        assert!(slot.try_swap(Box::new(Boom)).is_err());
        assert_eq!(slot.version(), "old");
        let loader: Box<Loader> = Box::new(|_p: &Path| bail!("corrupt file"));
        let e = format!(
            "{:#}",
            slot.reload(loader.as_ref(), Path::new("x")).unwrap_err()
        );
        assert!(e.contains("corrupt file"), "{e}");
        let loader: Box<Loader> = Box::new(|_p: &Path| panic!("loader bug"));
        assert!(slot.reload(loader.as_ref(), Path::new("x")).is_err());
        assert_eq!(slot.version(), "old");
        assert_eq!(slot.try_swap(Box::new(Const(0.9, "new"))).unwrap(), "new");
        assert_eq!(slot.version(), "new");
    }
}
