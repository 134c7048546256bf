//! Prometheus text-format metrics and one-JSON-line-per-event logs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A cumulative histogram with fixed upper bounds.
pub struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<AtomicU64>,
    /// Sum, stored as f64 bits (updated with a CAS loop).
    sum: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// A histogram with the given bucket upper bounds (ascending); `+Inf` is implicit.
    pub fn new(bounds: &[f64]) -> Self {
        Self {
            bounds: bounds.to_vec(),
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
            count: AtomicU64::new(0),
        }
    }

    /// Adds one observation.
    pub fn observe(&self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut cur = self.sum.load(Ordering::Relaxed);
        loop {
            let new = (f64::from_bits(cur) + v).to_bits();
            match self
                .sum
                .compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(x) => cur = x,
            }
        }
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cum += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        let total = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let _ = writeln!(
            out,
            "{name}_sum {}\n{name}_count {total}",
            f64::from_bits(self.sum.load(Ordering::Relaxed))
        );
    }
}

/// A counter family with labels, e.g. requests by route, status and outcome.
pub struct CounterVec {
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl CounterVec {
    /// A family with these label names.
    pub fn new(labels: &'static [&'static str]) -> Self {
        Self {
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Vec<String>, u64>> {
        self.values.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds one to the counter with these label values (in the order of the names).
    pub fn inc(&self, values: &[&str]) {
        debug_assert_eq!(values.len(), self.labels.len());
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        *self.lock().entry(key).or_default() += 1;
    }

    /// The counter with these label values.
    pub fn get(&self, values: &[&str]) -> u64 {
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        self.lock().get(&key).copied().unwrap_or(0)
    }

    /// Sum over every label value.
    pub fn total(&self) -> u64 {
        self.lock().values().sum()
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (vals, n) in self.lock().iter() {
            let labels: Vec<String> = self
                .labels
                .iter()
                .zip(vals)
                .map(|(k, v)| format!("{k}=\"{}\"", v.replace(['\\', '"', '\n'], "_")))
                .collect();
            let _ = writeln!(out, "{name}{{{}}} {n}", labels.join(","));
        }
    }
}

/// Everything `/metrics` reports.
pub struct Metrics {
    /// Queries (synapse routes) by route, HTTP status and outcome (`scored`, `fallback`,
    /// `rejected`).
    pub requests: CounterVec,
    /// `/healthz` and `/metrics`, not counted as queries.
    pub probes: CounterVec,
    rejections: Mutex<BTreeMap<&'static str, u64>>,
    /// Answers that carry the fallback prediction, by why.
    pub fallbacks: CounterVec,
    /// Connections accepted or refused at accept (`accepted`, `per_ip_limit`, `connections_full`).
    pub connections: CounterVec,
    /// Connections closed by the server early (`shed`, `header_timeout`, `idle_timeout`).
    pub connections_closed: CounterVec,
    pub open_connections: AtomicU64,
    pub latency_seconds: Histogram,
    pub decode_seconds: Histogram,
    pub batch_size: Histogram,
    pub prediction: Histogram,
    pub decode_failures: AtomicU64,
    /// JPEGs that end before their end-of-image marker (decoded, grey where data is missing).
    pub partial_images: AtomicU64,
    /// Nonces accepted although a newer one of the same key was accepted before.
    pub nonces_reordered: AtomicU64,
    pub predictor_failures: AtomicU64,
    pub model_reloads: AtomicU64,
    pub model_reload_failures: AtomicU64,
    pub queue_depth: AtomicU64,
    pub in_flight: AtomicU64,
    model_version: Mutex<String>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty metrics.
    pub fn new() -> Self {
        Self {
            requests: CounterVec::new(&["route", "status", "outcome"]),
            probes: CounterVec::new(&["route"]),
            rejections: Mutex::new(BTreeMap::new()),
            fallbacks: CounterVec::new(&["reason"]),
            connections: CounterVec::new(&["outcome"]),
            connections_closed: CounterVec::new(&["reason"]),
            open_connections: AtomicU64::new(0),
            latency_seconds: Histogram::new(&[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 9.0,
            ]),
            decode_seconds: Histogram::new(&[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0]),
            batch_size: Histogram::new(&[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
            prediction: Histogram::new(&[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]),
            decode_failures: AtomicU64::new(0),
            partial_images: AtomicU64::new(0),
            nonces_reordered: AtomicU64::new(0),
            predictor_failures: AtomicU64::new(0),
            model_reloads: AtomicU64::new(0),
            model_reload_failures: AtomicU64::new(0),
            queue_depth: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            model_version: Mutex::new(String::new()),
        }
    }

    /// Counts a rejection by reason label.
    pub fn reject(&self, reason: &'static str) {
        *self
            .rejections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    /// Rejections counted for `reason`.
    pub fn rejections(&self, reason: &str) -> u64 {
        self.rejections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(reason)
            .copied()
            .unwrap_or(0)
    }

    /// Sets the version label of the model in service.
    pub fn set_model_version(&self, v: &str) {
        *self.model_version.lock().unwrap_or_else(|p| p.into_inner()) = v.to_string();
    }

    /// Renders the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.requests.render(
            &mut out,
            "sv72_requests_total",
            "Queries answered, by route, HTTP status and outcome (scored, fallback, rejected).",
        );
        self.probes.render(
            &mut out,
            "sv72_probe_requests_total",
            "/healthz and /metrics requests (not queries).",
        );
        out.push_str("# HELP sv72_rejections_total Requests refused, by reason.\n");
        out.push_str("# TYPE sv72_rejections_total counter\n");
        for (r, n) in self
            .rejections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(out, "sv72_rejections_total{{reason=\"{r}\"}} {n}");
        }
        self.fallbacks.render(
            &mut out,
            "sv72_fallbacks_total",
            "Answers carrying serve.fallback_prediction, by reason.",
        );
        self.connections.render(
            &mut out,
            "sv72_connections_total",
            "Connections accepted or refused at accept.",
        );
        self.connections_closed.render(
            &mut out,
            "sv72_connections_closed_total",
            "Connections closed by the server: shed at capacity, head or idle timeout.",
        );
        self.decode_seconds.render(
            &mut out,
            "sv72_decode_seconds",
            "Time to decode one image (base64 to pixels).",
        );
        self.latency_seconds.render(
            &mut out,
            "sv72_request_latency_seconds",
            "Time from headers received to answer, accepted ImageSynapse requests.",
        );
        self.batch_size
            .render(&mut out, "sv72_batch_size", "Images per predictor call.");
        self.prediction
            .render(&mut out, "sv72_prediction", "Predictions sent.");
        for (name, help, v) in [
            (
                "sv72_decode_failures_total",
                "Images that could not be decoded (fallback prediction sent).",
                &self.decode_failures,
            ),
            (
                "sv72_partial_images_total",
                "JPEGs that end before their end-of-image marker (scored as decoded).",
                &self.partial_images,
            ),
            (
                "sv72_nonces_reordered_total",
                "Nonces accepted after a newer one of the same dendrite (inside the window).",
                &self.nonces_reordered,
            ),
            (
                "sv72_predictor_failures_total",
                "Predictor batches that failed or panicked (fallback sent).",
                &self.predictor_failures,
            ),
            (
                "sv72_model_reloads_total",
                "Successful hot swaps.",
                &self.model_reloads,
            ),
            (
                "sv72_model_reload_failures_total",
                "Hot swaps refused because the new model failed to load or probe.",
                &self.model_reload_failures,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        for (name, help, v) in [
            (
                "sv72_queue_depth",
                "Images waiting for the inference thread.",
                &self.queue_depth,
            ),
            (
                "sv72_open_connections",
                "Connections open.",
                &self.open_connections,
            ),
            (
                "sv72_in_flight_requests",
                "Requests being handled.",
                &self.in_flight,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let version = self
            .model_version
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(['\\', '"', '\n'], "_");
        let _ = writeln!(
            out,
            "# HELP sv72_model_info The model in service.\n# TYPE sv72_model_info gauge\n\
             sv72_model_info{{version=\"{version}\"}} 1"
        );
        out
    }
}

/// Writes one structured log event as a JSON line on stderr.
pub fn log_event(level: &str, event: &str, fields: serde_json::Value) {
    let mut obj = serde_json::Map::new();
    obj.insert(
        "ts".into(),
        chrono::Utc::now()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .into(),
    );
    obj.insert("level".into(), level.into());
    obj.insert("event".into(), event.into());
    if let serde_json::Value::Object(m) = fields {
        obj.extend(m);
    }
    eprintln!("{}", serde_json::Value::Object(obj));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_text_is_prometheus() {
        let m = Metrics::new();
        m.latency_seconds.observe(0.003);
        m.latency_seconds.observe(0.2);
        m.latency_seconds.observe(100.0);
        m.requests.inc(&["ImageSynapse", "200", "scored"]);
        m.reject("bad_signature");
        m.set_model_version("v\"1");
        let t = m.render();
        assert!(
            t.contains("sv72_request_latency_seconds_bucket{le=\"0.005\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("sv72_request_latency_seconds_bucket{le=\"0.25\"} 2"),
            "{t}"
        );
        assert!(
            t.contains("sv72_request_latency_seconds_bucket{le=\"+Inf\"} 3"),
            "{t}"
        );
        assert!(
            t.contains(
                "sv72_requests_total{route=\"ImageSynapse\",status=\"200\",outcome=\"scored\"} 1"
            ),
            "{t}"
        );
        assert!(t.contains("sv72_rejections_total{reason=\"bad_signature\"} 1"));
        assert!(t.contains("sv72_model_info{version=\"v_1\"} 1"));
        assert_eq!(m.rejections("bad_signature"), 1);
    }
}
