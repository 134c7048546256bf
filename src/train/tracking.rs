//! Experiment tracking: `metrics.jsonl` (always), TensorBoard event files (always) and live
//! Weights & Biases logging over its HTTP API (when `WANDB_API_KEY` and `train.wandb_project` are
//! set).
//!
//! W&B is best effort: any failure (connection refused, HTTP 500, bad answer) is reported once
//! through the warning sink and live logging stops for the rest of the run; training goes on and
//! the TensorBoard files can be uploaded later with `wandb sync --sync-tensorboard`. The API key
//! is only ever placed in the `Authorization` header: never in URLs, messages or artifacts.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

use super::tensorboard::EventWriter;

/// An API key that never prints.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where and as whom to log live to W&B.
#[derive(Debug, Clone)]
pub struct WandbSettings {
    /// `WANDB_BASE_URL`, default `https://api.wandb.ai`.
    pub base_url: String,
    pub api_key: Secret,
    pub project: String,
    pub entity: Option<String>,
}

impl WandbSettings {
    /// Settings from the environment and `train.wandb_*`; `None` when either the key or the
    /// project is missing (then nothing is sent anywhere).
    pub fn from_env(cfg: &crate::config::TrainConfig) -> Option<Self> {
        let key = std::env::var("WANDB_API_KEY")
            .ok()
            .filter(|k| !k.trim().is_empty())?;
        let project = cfg.wandb_project.clone().filter(|p| !p.is_empty())?;
        let base_url = std::env::var("WANDB_BASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "https://api.wandb.ai".into());
        Some(WandbSettings {
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key: Secret::new(key.trim()),
            project,
            entity: cfg.wandb_entity.clone(),
        })
    }
}

/// A live W&B run (GraphQL `upsertBucket` + the `file_stream` endpoint).
struct WandbRun {
    settings: WandbSettings,
    agent: ureq::Agent,
    stream_url: String,
    offset: usize,
    started: Instant,
}

fn auth_header(key: &Secret) -> String {
    let raw = format!("api:{}", key.expose());
    format!("Basic {}", base64(raw.as_bytes()))
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= c.len() {
                s.push(A[((n >> (18 - 6 * k)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

const UPSERT_BUCKET: &str = "mutation UpsertBucket($name: String, $project: String, \
$entity: String, $config: JSONString, $displayName: String) { upsertBucket(input: {name: $name, \
modelName: $project, entityName: $entity, config: $config, displayName: $displayName}) { bucket { \
id name project { name entity { name } } } } }";

impl WandbRun {
    fn post(&self, url: &str, body: &Value) -> Result<Value> {
        let bytes = serde_json::to_vec(body)?;
        let mut resp = self
            .agent
            .post(url)
            .header("Authorization", &auth_header(&self.settings.api_key))
            .header("Content-Type", "application/json")
            .send(&bytes[..])
            // ureq errors name the URL at most; the key lives only in the header.
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        if !(200..300).contains(&status) {
            bail!("HTTP {status} from {url}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn start(settings: WandbSettings, run_id: &str, config: &Value) -> Result<Self> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut run = WandbRun {
            stream_url: String::new(),
            settings,
            agent,
            offset: 0,
            started: Instant::now(),
        };
        let mut wb_config = Map::new();
        if let Value::Object(m) = config {
            for (k, v) in m {
                wb_config.insert(k.clone(), json!({ "value": v }));
            }
        }
        let body = json!({
            "query": UPSERT_BUCKET,
            "variables": {
                "name": run_id,
                "displayName": run_id,
                "project": run.settings.project,
                "entity": run.settings.entity,
                "config": serde_json::to_string(&Value::Object(wb_config))?,
            }
        });
        let url = format!("{}/graphql", run.settings.base_url);
        let resp = run.post(&url, &body)?;
        if let Some(errs) = resp.get("errors") {
            bail!("W&B refused to create the run: {errs}");
        }
        let entity = resp
            .pointer("/data/upsertBucket/bucket/project/entity/name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| run.settings.entity.clone())
            .context("W&B did not say which entity owns the run; set train.wandb_entity")?;
        run.stream_url = format!(
            "{}/files/{}/{}/{}/file_stream",
            run.settings.base_url, entity, run.settings.project, run_id
        );
        Ok(run)
    }

    fn log(&mut self, step: u64, values: &[(&str, f64)]) -> Result<()> {
        let mut row = Map::new();
        for (k, v) in values {
            row.insert((*k).to_string(), json!(v));
        }
        row.insert("_step".into(), json!(step));
        row.insert(
            "_runtime".into(),
            json!(self.started.elapsed().as_secs_f64()),
        );
        row.insert("_timestamp".into(), json!(unix_now()));
        let line = serde_json::to_string(&Value::Object(row))?;
        let body = json!({ "files": { "wandb-history.jsonl": { "offset": self.offset, "content": [line] } } });
        self.post(&self.stream_url.clone(), &body)?;
        self.offset += 1;
        Ok(())
    }

    fn finish(&mut self, exitcode: i32) -> Result<()> {
        let body = json!({ "complete": true, "exitcode": exitcode });
        self.post(&self.stream_url.clone(), &body)?;
        Ok(())
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Where warnings go (stderr by default; tests capture them).
pub type WarnSink = Box<dyn FnMut(&str) + Send>;

/// The default warning sink.
pub fn stderr_warn() -> WarnSink {
    Box::new(|m| eprintln!("warning: {m}"))
}

/// All tracking outputs of one run.
pub struct Tracker {
    jsonl_path: PathBuf,
    jsonl: File,
    tb: EventWriter,
    wandb: Option<WandbRun>,
    warn: WarnSink,
}

impl Tracker {
    /// Opens `run_dir/metrics.jsonl`, a TensorBoard event file in `run_dir`, and (when `wandb`
    /// is given) a live W&B run named `run_id`.
    pub fn open(
        run_dir: &Path,
        run_id: &str,
        config: &Value,
        wandb: Option<WandbSettings>,
        mut warn: WarnSink,
    ) -> Result<Self> {
        std::fs::create_dir_all(run_dir)
            .with_context(|| format!("cannot create {}", run_dir.display()))?;
        let jsonl_path = run_dir.join("metrics.jsonl");
        let jsonl = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&jsonl_path)
            .with_context(|| format!("cannot open {}", jsonl_path.display()))?;
        let tb = EventWriter::create(run_dir)?;
        let wandb = match wandb {
            None => None,
            Some(s) => match WandbRun::start(s, run_id, config) {
                Ok(r) => Some(r),
                Err(e) => {
                    warn(&format!("W&B live logging is off for this run ({e:#}); metrics.jsonl and TensorBoard files are still written"));
                    None
                }
            },
        };
        Ok(Tracker {
            jsonl_path,
            jsonl,
            tb,
            wandb,
            warn,
        })
    }

    /// Whether a live W&B run is active.
    pub fn wandb_active(&self) -> bool {
        self.wandb.is_some()
    }

    /// Logs one step's scalars everywhere. Only local write failures are errors.
    pub fn log(&mut self, step: u64, values: &[(&str, f64)]) -> Result<()> {
        let mut row = Map::new();
        row.insert("step".into(), json!(step));
        for (k, v) in values {
            row.insert((*k).to_string(), json!(v));
        }
        let line = serde_json::to_string(&Value::Object(row))?;
        writeln!(self.jsonl, "{line}")
            .and_then(|_| self.jsonl.flush())
            .with_context(|| format!("writing {}", self.jsonl_path.display()))?;
        let scalars: Vec<(&str, f32)> = values.iter().map(|(k, v)| (*k, *v as f32)).collect();
        self.tb.scalars(step as i64, &scalars)?;
        if let Some(w) = &mut self.wandb {
            if let Err(e) = w.log(step, values) {
                (self.warn)(&format!("W&B live logging stopped ({e:#}); training continues, metrics.jsonl and TensorBoard files are complete"));
                self.wandb = None;
            }
        }
        Ok(())
    }

    /// Marks the W&B run finished (exit code 0 on success).
    pub fn finish(&mut self, ok: bool) {
        let _ = self.tb.flush();
        if let Some(w) = &mut self.wandb {
            if let Err(e) = w.finish(if ok { 0 } else { 1 }) {
                (self.warn)(&format!("W&B could not mark the run finished ({e:#})"));
            }
        }
        self.wandb = None;
    }

    /// Path of the TensorBoard event file.
    pub fn event_file(&self) -> &Path {
        self.tb.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_secret() {
        assert_eq!(base64(b"api:abc"), "YXBpOmFiYw==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert!(!format!("{:?}", Secret::new("hunter2")).contains("hunter2"));
    }
}
