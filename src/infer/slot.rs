//! The hot-swappable model in service (`ModelSlot`): a new model is loaded beside the old one,
//! probed, and swapped in between batches; anything wrong keeps the old one serving.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use image::RgbImage;

use super::predictor::{Loader, Predictor};

/// What inference reports (the axon counts it in its metrics and logs it). Every method
/// defaults to doing nothing; `()` reports nothing.
pub trait Telemetry: Send + Sync + 'static {
    /// The model in service is now `version`.
    fn model_version(&self, _version: &str) {}
    /// The watched `path` changed and its new model `version` was swapped in.
    fn model_swapped(&self, _path: &Path, _version: &str) {}
    /// The watched `path` changed but its model was refused; `serving` keeps serving.
    fn model_swap_refused(&self, _path: &Path, _error: &str, _serving: &str) {}
    /// Jobs waiting in the batch queue.
    fn queue_depth(&self, _depth: usize) {}
    /// A batch of `n` images goes to the predictor.
    fn batch_size(&self, _n: usize) {}
    /// The predictor gave a non-finite answer for one image (it gets the fallback).
    fn non_finite_answer(&self) {}
    /// The predictor failed (error, panic, wrong count) on a whole batch of `batch` images.
    fn batch_failed(&self, _error: &str, _batch: usize, _model: &str) {}
}

impl Telemetry for () {}

/// The predictor in service; swapped whole between batches.
pub struct ModelSlot<T: Telemetry = ()> {
    current: Mutex<Box<dyn Predictor>>,
    version: Mutex<String>,
    telemetry: Arc<T>,
}

impl<T: Telemetry> ModelSlot<T> {
    /// A slot serving `p`, reporting to `telemetry`.
    pub fn new(p: Box<dyn Predictor>, telemetry: Arc<T>) -> Arc<Self> {
        let v = p.version();
        telemetry.model_version(&v);
        Arc::new(Self {
            current: Mutex::new(p),
            version: Mutex::new(v),
            telemetry,
        })
    }

    /// What this slot reports to.
    pub fn telemetry(&self) -> Arc<T> {
        self.telemetry.clone()
    }

    /// Version of the predictor in service.
    pub fn version(&self) -> String {
        self.version
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Box<dyn Predictor>> {
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
        self.telemetry.model_version(&v);
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
                        Ok(v) => slot.telemetry.model_swapped(&path, &v),
                        Err(e) => {
                            let serving = slot.version();
                            slot.telemetry
                                .model_swap_refused(&path, &format!("{e:#}"), &serving)
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
    if !path.exists() {
        return 0;
    }
    let mut h = blake3::Hasher::new();
    let entries = walkdir::WalkDir::new(path)
        .follow_links(true)
        .max_depth(4)
        .sort_by_file_name()
        .into_iter()
        // Atomic-write temp files come and go while a writer works.
        .filter_entry(|e| !e.file_name().to_string_lossy().starts_with(".sv72-"));
    for e in entries.filter_map(|e| e.ok()) {
        let Ok(md) = e.metadata() else {
            continue;
        };
        let rel: String = e
            .path()
            .strip_prefix(path)
            .unwrap_or(e.path())
            .iter()
            .map(|c| format!("/{}", c.to_string_lossy()))
            .collect();
        h.update(rel.as_bytes());
        h.update(&md.len().to_le_bytes());
        let mtime = md
            .modified()
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        h.update(&mtime.to_le_bytes());
    }
    let b = h.finalize();
    u64::from_le_bytes(b.as_bytes()[..8].try_into().expect("8 bytes")).max(1)
}

pub(crate) fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-text panic".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::predictor::Predictor;
    use anyhow::Result;

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

    #[test]
    fn broken_swap_keeps_old_model() {
        let slot = ModelSlot::new(Box::new(Const(0.3, "old")), Arc::new(()));
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

    #[test]
    fn fingerprint_sees_changes_but_not_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("model");
        assert_eq!(fingerprint(&m), 0);
        std::fs::create_dir_all(m.join("sub")).unwrap();
        std::fs::write(m.join("sub/w.bin"), b"1").unwrap();
        let a = fingerprint(&m);
        assert_ne!(a, 0);
        assert_eq!(fingerprint(&m), a, "unchanged folder, same fingerprint");
        std::fs::write(m.join(".sv72-tmp-1"), b"partial").unwrap();
        // Adding a file changes the folder's own mtime; compare against a fresh baseline.
        let with_tmp = fingerprint(&m);
        std::fs::write(m.join(".sv72-tmp-1"), b"partial, longer").unwrap();
        assert_eq!(fingerprint(&m), with_tmp, "temp files are not looked at");
        std::fs::write(m.join("sub/w.bin"), b"22").unwrap();
        assert_ne!(fingerprint(&m), with_tmp, "a changed file changes it");
    }
}
