//! Dynamic micro-batching of concurrent requests on one dedicated inference thread, highest
//! stake first; a full queue sheds its lowest-stake job.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use image::RgbImage;
use tokio::sync::oneshot;

use super::slot::{panic_text, ModelSlot, Telemetry};

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
pub struct Batcher<T: Telemetry = ()> {
    queue: Mutex<Queue>,
    ready: Condvar,
    opts: BatchOptions,
    telemetry: Arc<T>,
}

impl<T: Telemetry> Batcher<T> {
    /// Starts the inference thread over `slot`.
    pub fn start<S: Telemetry>(
        slot: Arc<ModelSlot<S>>,
        opts: BatchOptions,
        telemetry: Arc<T>,
    ) -> (Arc<Self>, JoinHandle<()>) {
        let b = Arc::new(Self {
            queue: Mutex::new(Queue {
                jobs: BTreeMap::new(),
                seq: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            opts,
            telemetry,
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
        self.telemetry.queue_depth(q.jobs.len());
        drop(q);
        self.ready.notify_one();
        rx
    }

    /// Stops taking work; the thread finishes what is queued, then exits.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    fn run<S: Telemetry>(&self, slot: &ModelSlot<S>) {
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
                self.telemetry.queue_depth(q.jobs.len());
                batch
            };
            if batch.is_empty() {
                continue;
            }
            self.run_batch(slot, batch);
        }
    }

    fn run_batch<S: Telemetry>(&self, slot: &ModelSlot<S>, batch: Vec<Job>) {
        let (images, replies): (Vec<RgbImage>, Vec<_>) =
            batch.into_iter().map(|j| (j.image, j.reply)).unzip();
        self.telemetry.batch_size(images.len());
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
                        self.telemetry.non_finite_answer();
                        Outcome::Fallback(self.opts.fallback)
                    };
                    let _ = r.send(out);
                }
            }
            Err(e) => {
                self.telemetry
                    .batch_failed(&e, replies.len(), &slot.version());
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

    /// Counts predictor failures.
    #[derive(Default)]
    struct Failures(std::sync::atomic::AtomicU64);
    impl Telemetry for Failures {
        fn non_finite_answer(&self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        fn batch_failed(&self, _: &str, _: usize, _: &str) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn img() -> RgbImage {
        RgbImage::new(4, 4)
    }

    #[test]
    fn full_queue_sheds_lowest_stake() {
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
            telemetry: Arc::new(()),
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
        let m = Arc::new(Failures::default());
        let slot = ModelSlot::new(Box::new(Boom), Arc::new(()));
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
        assert!(m.0.load(std::sync::atomic::Ordering::Relaxed) >= 3);
    }
}
