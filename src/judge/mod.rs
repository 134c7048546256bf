//! A vision-language judge for uncertain answers (issue #15): when the model's probability falls
//! in the configured band, the image and a yes/no question go to an OpenAI-compatible
//! chat-completions endpoint (vLLM, SGLang, Ollama, TGI serving Qwen2.5-VL, Florence-2, ...),
//! and its opinion is blended into the answer.
//!
//! The answer never waits past its deadline: each call gets `min(timeout, deadline - now -
//! reserve)`, runs on its own thread, and the caller stops waiting when that runs out and sends
//! the base answer. A concurrency cap bounds the threads a slow endpoint can hold, a circuit
//! breaker stops calling an endpoint that keeps failing, and opinions are cached by image hash.
//! Every judged answer is logged with both opinions. The API key is read from the environment
//! variable the config names and is never printed.

pub mod breaker;
pub mod reply;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde::Serialize;

pub use breaker::{Breaker, Permit};
pub use reply::reply_probability;

use crate::config::JudgeConfig;

/// Below this much time left a call is not started (it could not come back in time).
const MIN_BUDGET: Duration = Duration::from_millis(50);

/// What happened to one answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Verdict {
    /// The base answer was outside the band; not judged.
    Confident,
    /// Judged now (or from the cache): the judge's probability.
    Judged { judge: f64, cached: bool },
    /// Not judged: `reason` is `late`, `busy`, `breaker_open`, `no_time`, or the error.
    Unjudged { reason: String },
}

/// An answer after the judge: what is sent, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub answer: f32,
    pub verdict: Verdict,
}

/// The API key, kept out of `Debug` and error text.
#[derive(Clone)]
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Opinions by image hash, oldest dropped first.
#[derive(Default)]
struct Cache {
    map: HashMap<String, f64>,
    order: VecDeque<String>,
}

/// The judge: configuration, HTTP agent, breaker, cache, in-flight count and log.
pub struct Judge {
    cfg: JudgeConfig,
    url: String,
    key: Option<Secret>,
    agent: ureq::Agent,
    breaker: Breaker,
    cache: Mutex<Cache>,
    in_flight: Arc<AtomicUsize>,
    log: Option<Mutex<std::fs::File>>,
}

impl fmt::Debug for Judge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Judge")
            .field("url", &self.url)
            .field("model", &self.cfg.model)
            .field("key", &self.key)
            .field("breaker", &self.breaker.state_name())
            .finish()
    }
}

impl Judge {
    /// The judge the config describes, or `None` when `judge.endpoint` is empty. Errors name
    /// the `judge.*` key at fault.
    pub fn from_config(cfg: &JudgeConfig) -> Result<Option<Arc<Self>>> {
        if cfg.endpoint.trim().is_empty() {
            return Ok(None);
        }
        let [lo, hi] = cfg.band;
        if !(0.0..=1.0).contains(&lo) || !(0.0..=1.0).contains(&hi) || lo > hi {
            bail!("judge.band = [{lo}, {hi}] must be within [0, 1] with lo <= hi");
        }
        if !(0.0..=1.0).contains(&cfg.weight) {
            bail!("judge.weight = {} must be within [0, 1]", cfg.weight);
        }
        if !(0.5..=1.0).contains(&cfg.answer_confidence) {
            bail!(
                "judge.answer_confidence = {} must be within [0.5, 1]",
                cfg.answer_confidence
            );
        }
        if cfg.max_concurrency == 0 || cfg.timeout_ms == 0 {
            bail!("judge.max_concurrency and judge.timeout_ms must be at least 1");
        }
        let base = cfg.endpoint.trim().trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("judge.endpoint = {base:?} must be an http:// or https:// URL");
        }
        let key = if cfg.api_key_env.is_empty() {
            None
        } else {
            match std::env::var(&cfg.api_key_env) {
                Ok(k) if !k.is_empty() => Some(Secret(k)),
                _ => bail!(
                    "judge.api_key_env names {}, but that environment variable is not set",
                    cfg.api_key_env
                ),
            }
        };
        let log = if cfg.log.as_os_str().is_empty() {
            None
        } else {
            Some(Mutex::new(open_log(&cfg.log)?))
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_millis(cfg.timeout_ms)))
            .build()
            .into();
        Ok(Some(Arc::new(Self {
            url: format!("{base}/chat/completions"),
            cfg: cfg.clone(),
            key,
            agent,
            breaker: Breaker::new(
                cfg.breaker_failures,
                Duration::from_millis(cfg.breaker_cooldown_ms),
            ),
            cache: Mutex::new(Cache::default()),
            in_flight: Arc::new(AtomicUsize::new(0)),
            log,
        })))
    }

    /// The judge for serving `model`: as [`Judge::from_config`], with the blend weight the
    /// model spec fitted (`sv72 calibrate --judge`) preferred over `judge.weight` — unless the
    /// config now names another judge model or band, for which that weight says nothing (then
    /// `judge.weight`, with a warning). The weight is read at start; a spec refitted while
    /// serving takes effect on restart.
    pub fn for_model(cfg: &JudgeConfig, model: &Path) -> Result<Option<Arc<Self>>> {
        let mut cfg = cfg.clone();
        if !cfg.endpoint.trim().is_empty() {
            if let Some(fit) = crate::infer::fitted_judge(model)? {
                if fit_matches(&fit, &cfg) {
                    cfg.weight = fit.weight;
                } else {
                    eprintln!(
                        "judge: warning: {} fitted its judge weight {:.2} for model {:?} and band                          {:?}, but the config says {:?} and {:?}; using judge.weight = {:.2}                          (rerun `sv72 calibrate {} --on MANIFEST --judge` to refit)",
                        model.display(),
                        fit.weight,
                        fit.model,
                        fit.band,
                        cfg.model,
                        cfg.band,
                        cfg.weight,
                        model.display()
                    );
                }
            }
        }
        Self::from_config(&cfg)
    }

    /// The blend weight in use.
    pub fn weight(&self) -> f64 {
        self.cfg.weight
    }

    /// Whether `base` is in the band the judge is asked about.
    pub fn wants(&self, base: f32) -> bool {
        let p = f64::from(base);
        p >= self.cfg.band[0] && p <= self.cfg.band[1]
    }

    /// Breaker state (`closed`, `open`, `half_open`).
    pub fn breaker_state(&self) -> &'static str {
        self.breaker.state_name()
    }

    /// The answer for an image (its encoded bytes, as received, and their `hash`) whose model
    /// answer is `base`, ready by `deadline` whatever the endpoint does.
    pub fn judge(
        self: &Arc<Self>,
        image: &[u8],
        hash: &str,
        base: f32,
        deadline: Instant,
    ) -> Judged {
        let start = Instant::now();
        if !self.wants(base) {
            return Judged {
                answer: base,
                verdict: Verdict::Confident,
            };
        }
        let out = self.judge_inner(image, hash, base, deadline);
        self.write_log(hash, base, &out, start.elapsed());
        out
    }

    fn unjudged(base: f32, reason: impl Into<String>) -> Judged {
        Judged {
            answer: base,
            verdict: Verdict::Unjudged {
                reason: reason.into(),
            },
        }
    }

    fn blended(&self, base: f32, judge: f64, cached: bool) -> Judged {
        let w = self.cfg.weight;
        let p = (1.0 - w) * f64::from(base) + w * judge;
        Judged {
            answer: p.clamp(0.0, 1.0) as f32,
            verdict: Verdict::Judged { judge, cached },
        }
    }

    fn judge_inner(
        self: &Arc<Self>,
        image: &[u8],
        hash: &str,
        base: f32,
        deadline: Instant,
    ) -> Judged {
        match self.opinion(image, hash, deadline) {
            Ok((p, cached)) => self.blended(base, p, cached),
            Err(reason) => Self::unjudged(base, reason),
        }
    }

    /// The judge's own probability of roadwork for an image (and whether it came from the
    /// cache), whatever the base answer, by `deadline`; `Err` says why there is none (`late`,
    /// `busy`, `breaker_open`, `no_time`, or the error). `mine-hard --judge` asks this.
    pub fn opinion(
        self: &Arc<Self>,
        image: &[u8],
        hash: &str,
        deadline: Instant,
    ) -> std::result::Result<(f64, bool), String> {
        if let Some(&p) = self.lock_cache().map.get(hash) {
            return Ok((p, true));
        }
        let now = Instant::now();
        let budget = deadline
            .saturating_duration_since(now)
            .saturating_sub(Duration::from_millis(self.cfg.reserve_ms))
            .min(Duration::from_millis(self.cfg.timeout_ms));
        if budget < MIN_BUDGET {
            return Err("no_time".into());
        }
        // Take a slot before asking the breaker, so a refused call does not use up the trial.
        let Some(slot) = Slot::take(&self.in_flight, self.cfg.max_concurrency) else {
            return Err("busy".into());
        };
        if self.breaker.permit(now) == Permit::Refused {
            return Err("breaker_open".into());
        }
        let body = self.request_body(image);
        let (tx, rx) = mpsc::channel();
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("sv72-judge".into())
            .spawn(move || {
                // The slot is held until the HTTP call really ends (bounded by `budget`), and
                // released before the answer is handed over.
                let r = me.call(&body, budget);
                match &r {
                    Ok(_) => me.breaker.success(),
                    Err(_) => me.breaker.failure(Instant::now()),
                }
                drop(slot);
                let _ = tx.send(r);
            });
        if let Err(e) = spawned {
            return Err(format!("cannot start a judge thread: {e}"));
        }
        match rx.recv_timeout(budget) {
            Ok(Ok(p)) => {
                self.remember(hash, p);
                Ok((p, false))
            }
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(_) => Err("late".into()),
        }
    }

    /// Time kept back from a deadline for sending the answer.
    pub fn reserve(&self) -> Duration {
        Duration::from_millis(self.cfg.reserve_ms)
    }

    /// The configured model name and per-call timeout (for reports).
    pub fn describe(&self) -> (String, Duration) {
        (
            self.cfg.model.clone(),
            Duration::from_millis(self.cfg.timeout_ms),
        )
    }

    fn request_body(&self, image: &[u8]) -> Vec<u8> {
        let mime = if image.starts_with(&[0x89, b'P', b'N', b'G']) {
            "image/png"
        } else {
            "image/jpeg"
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode(image);
        let mut req = serde_json::json!({
            "model": self.cfg.model,
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": self.cfg.prompt},
                {"type": "image_url", "image_url": {"url": format!("data:{mime};base64,{b64}")}}
            ]}],
            "max_tokens": 2,
            "temperature": 0,
        });
        if self.cfg.logprobs {
            req["logprobs"] = true.into();
            req["top_logprobs"] = 5.into();
        }
        req.to_string().into_bytes()
    }

    /// One HTTP call, ending within `budget`.
    fn call(&self, body: &[u8], budget: Duration) -> Result<f64> {
        let mut req = self
            .agent
            .post(&self.url)
            .config()
            .timeout_global(Some(budget))
            .build()
            .header("Content-Type", "application/json");
        if let Some(k) = &self.key {
            req = req.header("Authorization", &format!("Bearer {}", k.0));
        }
        // ureq's error text names the URL, never the headers.
        let mut resp = req
            .send(body)
            .with_context(|| format!("judge endpoint {} failed", self.url))?;
        let status = resp.status().as_u16();
        let raw = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .context("reading the judge reply")?;
        if status != 200 {
            bail!("judge endpoint answered HTTP {status}");
        }
        reply_probability(&raw, self.cfg.answer_confidence)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remember(&self, hash: &str, p: f64) {
        let cap = self.cfg.cache_entries;
        if cap == 0 {
            return;
        }
        let mut c = self.lock_cache();
        if c.map.insert(hash.to_string(), p).is_none() {
            c.order.push_back(hash.to_string());
        }
        while c.order.len() > cap {
            if let Some(old) = c.order.pop_front() {
                c.map.remove(&old);
            }
        }
    }

    fn write_log(&self, hash: &str, base: f32, out: &Judged, took: Duration) {
        let Some(log) = &self.log else { return };
        let mut line = serde_json::json!({
            "time": chrono::Utc::now().to_rfc3339(),
            "image_hash": hash,
            "model": self.cfg.model,
            "base": base,
            "answer": out.answer,
            "ms": took.as_secs_f64() * 1e3,
            "breaker": self.breaker.state_name(),
        });
        if let Ok(serde_json::Value::Object(v)) = serde_json::to_value(&out.verdict) {
            for (k, x) in v {
                line[k] = x;
            }
        }
        let mut f = log.lock().unwrap_or_else(|e| e.into_inner());
        // A full disk must not cost the answer; the line is lost.
        let _ = writeln!(f, "{line}");
    }
}

fn open_log(path: &Path) -> Result<std::fs::File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("judge.log: cannot create {}", dir.display()))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("judge.log: cannot open {}", path.display()))
}

/// One of the `max_concurrency` call slots; released on drop.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(count.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether a stored judge fit was made for the judge model and band `cfg` configures.
fn fit_matches(fit: &crate::infer::JudgeFit, cfg: &JudgeConfig) -> bool {
    fit.model == cfg.model && (0..2).all(|i| (fit.band[i] - cfg.band[i]).abs() < 1e-9)
}

/// A labelled challenge to ask the judge about while fitting its weight (`sv72 calibrate
/// --judge`): the encoded image as it would be received, its hash, the model's answer and label.
#[derive(Debug, Clone)]
pub struct FitCase {
    pub image: Vec<u8>,
    pub hash: String,
    pub base: f64,
    pub label: u8,
}

/// The fitted blend weight and what it rests on.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightFit {
    pub weight: f64,
    /// Cases asked, and those the judge answered (the fit uses these).
    pub asked: usize,
    pub judged: usize,
    /// Why the others got no opinion, with counts.
    pub unjudged: BTreeMap<String, usize>,
}

impl Judge {
    /// Asks the judge about every case (at most `max_concurrency` at once, each call bounded by
    /// `timeout_ms` as in serving) and fits the blend weight on the answered ones. An error when
    /// none was answered: a weight fitted on nothing would be a guess.
    pub fn fit_weight_by_asking(self: &Arc<Self>, cases: &[FitCase]) -> Result<WeightFit> {
        let next = AtomicUsize::new(0);
        let got: Mutex<Vec<(usize, std::result::Result<f64, String>)>> = Mutex::new(Vec::new());
        let workers = self.cfg.max_concurrency.min(cases.len()).max(1);
        // Each call's deadline is its own timeout plus the reserve, so the budget `opinion`
        // computes is exactly `timeout_ms`.
        let per_call = Duration::from_millis(self.cfg.timeout_ms + self.cfg.reserve_ms);
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(c) = cases.get(i) else { break };
                    let mut r = self.opinion(&c.image, &c.hash, Instant::now() + per_call);
                    // A slot can still be held for a moment by the call before; wait once.
                    if matches!(&r, Err(e) if e == "busy") {
                        std::thread::sleep(Duration::from_millis(20));
                        r = self.opinion(&c.image, &c.hash, Instant::now() + per_call);
                    }
                    let r = r.map(|(p, _cached)| p);
                    got.lock().unwrap_or_else(|e| e.into_inner()).push((i, r));
                });
            }
        });
        let mut got = got.into_inner().unwrap_or_else(|e| e.into_inner());
        got.sort_by_key(|(i, _)| *i);
        let mut samples = Vec::new();
        let mut unjudged = BTreeMap::new();
        for (i, r) in got {
            match r {
                Ok(j) => samples.push((cases[i].base, j, cases[i].label)),
                Err(why) => *unjudged.entry(why).or_insert(0) += 1,
            }
        }
        if samples.is_empty() {
            bail!(
                "judge: none of the {} cases asked got an opinion from {} ({:?}); no weight fitted",
                cases.len(),
                self.url,
                unjudged
            );
        }
        Ok(WeightFit {
            weight: fit_weight(&samples),
            asked: cases.len(),
            judged: samples.len(),
            unjudged,
        })
    }

    /// The configured band (for reports and the fitted spec).
    pub fn band(&self) -> [f64; 2] {
        self.cfg.band
    }
}

/// The blend weight `w` in `(1 - w) * base + w * judge` that minimises the log-loss on
/// `(base, judge, label)` triples (grid search over 0, 0.01, ..., 1; ties to the smaller `w`).
pub fn fit_weight(samples: &[(f64, f64, u8)]) -> f64 {
    let loss = |w: f64| -> f64 {
        samples
            .iter()
            .map(|&(b, j, y)| {
                let p = ((1.0 - w) * b + w * j).clamp(1e-6, 1.0 - 1e-6);
                if y != 0 {
                    -p.ln()
                } else {
                    -(1.0 - p).ln()
                }
            })
            .sum()
    };
    let mut best = (0.0, f64::INFINITY);
    for i in 0..=100 {
        let w = f64::from(i) / 100.0;
        let l = loss(w);
        if l < best.1 - 1e-12 {
            best = (w, l);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_fit_finds_the_known_answer() {
        // A useless judge (always 0.5) gets weight 0; a perfect one beside a coin-flip base, 1.
        let useless: Vec<_> = (0..20)
            .map(|i| (if i % 2 == 0 { 0.8 } else { 0.2 }, 0.5, (i % 2 == 0) as u8))
            .collect();
        assert_eq!(fit_weight(&useless), 0.0);
        let perfect: Vec<_> = (0..20)
            .map(|i| {
                (
                    0.5,
                    if i % 2 == 0 { 0.99 } else { 0.01 },
                    (i % 2 == 0) as u8,
                )
            })
            .collect();
        assert_eq!(fit_weight(&perfect), 1.0);
        // Base 0.6 and judge 1.0 for positives, base 0.4 and judge 0 for negatives, but one
        // in five labels flipped: the loss is minimised where the blend says 0.8 / 0.2,
        // i.e. 0.6 + 0.4w = 0.8 → w = 0.5.
        let mut mixed = Vec::new();
        for i in 0..50 {
            let pos = i % 2 == 0;
            let flipped = i % 10 < 2;
            let (b, j) = if pos { (0.6, 1.0) } else { (0.4, 0.0) };
            mixed.push((b, j, (pos != flipped) as u8));
        }
        assert!(
            (fit_weight(&mixed) - 0.5).abs() < 0.011,
            "{}",
            fit_weight(&mixed)
        );
    }

    use std::path::PathBuf;

    #[test]
    fn config_errors_name_the_key_and_the_key_is_never_shown() {
        let mut c = JudgeConfig {
            endpoint: "http://127.0.0.1:9".into(),
            log: PathBuf::new(),
            ..Default::default()
        };
        assert!(Judge::from_config(&JudgeConfig::default())
            .unwrap()
            .is_none());
        c.band = [0.7, 0.3];
        assert!(Judge::from_config(&c)
            .unwrap_err()
            .to_string()
            .contains("judge.band"));
        c.band = [0.3, 0.7];
        c.weight = 2.0;
        assert!(Judge::from_config(&c)
            .unwrap_err()
            .to_string()
            .contains("judge.weight"));
        c.weight = 0.5;
        c.api_key_env = "SV72_TEST_JUDGE_KEY_UNSET".into();
        let e = Judge::from_config(&c).unwrap_err().to_string();
        assert!(
            e.contains("SV72_TEST_JUDGE_KEY_UNSET") && e.contains("not set"),
            "{e}"
        );
        // A key given through the environment never shows in Debug.
        c.api_key_env = "PATH".into();
        let j = Judge::from_config(&c).unwrap().unwrap();
        let shown = format!("{j:?}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(!shown.contains(&std::env::var("PATH").unwrap()), "{shown}");
    }
}
