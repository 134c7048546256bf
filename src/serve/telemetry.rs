//! How the axon sees inference: `infer`'s slot and batcher reporting into the axon's
//! [`Metrics`] and its JSON log.

use std::path::Path;
use std::sync::atomic::Ordering;

use super::metrics::{log_event, Metrics};
use crate::infer::Telemetry;

/// The model slot the axon serves from.
pub type ModelSlot = crate::infer::ModelSlot<Metrics>;
/// The axon's micro-batcher.
pub type Batcher = crate::infer::Batcher<Metrics>;

impl Telemetry for Metrics {
    fn model_version(&self, version: &str) {
        self.set_model_version(version);
    }

    fn model_swapped(&self, path: &Path, version: &str) {
        self.model_reloads.fetch_add(1, Ordering::Relaxed);
        log_event(
            "info",
            "model_swapped",
            serde_json::json!({"path": path.display().to_string(), "version": version}),
        );
    }

    fn model_swap_refused(&self, path: &Path, error: &str, serving: &str) {
        self.model_reload_failures.fetch_add(1, Ordering::Relaxed);
        log_event(
            "error",
            "model_swap_refused",
            serde_json::json!({
                "path": path.display().to_string(),
                "error": error,
                "serving": serving,
            }),
        );
    }

    fn queue_depth(&self, depth: usize) {
        self.queue_depth.store(depth as u64, Ordering::Relaxed);
    }

    fn batch_size(&self, n: usize) {
        self.batch_size.observe(n as f64);
    }

    fn non_finite_answer(&self) {
        self.predictor_failures.fetch_add(1, Ordering::Relaxed);
    }

    fn batch_failed(&self, error: &str, batch: usize, model: &str) {
        self.predictor_failures.fetch_add(1, Ordering::Relaxed);
        log_event(
            "error",
            "predictor_failed",
            serde_json::json!({"error": error, "batch": batch, "model": model}),
        );
    }
}
