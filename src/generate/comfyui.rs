//! ComfyUI: a workflow template in API format (`{node_id: {class_type, inputs}}`, "Save (API
//! Format)" in the UI) with the prompt, seed and, for image-to-image, the uploaded source and
//! the denoising strength filled into the inputs `generate.comfyui` names (`NODE.INPUT`).
//!
//! Per image: `POST /upload/image` (i2i; same name, `overwrite`, so safe to repeat), then
//! `POST /prompt` with a `prompt_id` derived from the job, `GET /history/<id>` until the run
//! completes, and `GET /view` for each saved image. The id makes a queued job findable: after a
//! kill, or when the `/prompt` answer was lost, the job is looked up in `/history` and `/queue`
//! before it is queued again.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use super::http::{
    mime_of, query_escape, Auth, Body, Http, Multipart, Repeat, Retry, Secret, StatusError,
};
use super::{Backend, Generated, Image, Job, JobMode};
use crate::config::{ComfyUiGenConfig, GenBackend, GenerateConfig};

/// A node input, `NODE.INPUT`.
#[derive(Debug, Clone)]
struct InputRef {
    node: String,
    input: String,
}

impl InputRef {
    fn parse(s: &str, key: &str) -> Result<Self> {
        let (n, i) = s
            .split_once('.')
            .filter(|(n, i)| !n.is_empty() && !i.is_empty())
            .with_context(|| {
                format!("generate.comfyui.{key} = {s:?}: expected NODE_ID.INPUT, e.g. 6.text")
            })?;
        Ok(InputRef {
            node: n.to_string(),
            input: i.to_string(),
        })
    }

    fn set(&self, wf: &mut Value, v: Value) {
        wf[&self.node]["inputs"][&self.input] = v;
    }
}

/// A loaded, checked workflow template.
struct Template {
    path: PathBuf,
    json: Value,
    hash: String,
}

impl Template {
    fn load(path: &Path, refs: &[(&str, &InputRef)]) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read the ComfyUI workflow {} (generate.comfyui.workflow)",
                path.display()
            )
        })?;
        let json: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let nodes = json.as_object().with_context(|| {
            format!(
                "{}: not an API-format workflow (an object of nodes; export it with \"Save (API Format)\")",
                path.display()
            )
        })?;
        if nodes.values().any(|n| n.get("class_type").is_none()) {
            bail!(
                "{}: nodes without `class_type`: this looks like a UI workflow; export it with \"Save (API Format)\"",
                path.display()
            );
        }
        for (key, r) in refs {
            let inputs = nodes
                .get(&r.node)
                .and_then(|n| n.get("inputs"))
                .and_then(Value::as_object)
                .with_context(|| {
                    format!("{}: generate.comfyui.{key} names node {:?}, which the workflow does not have", path.display(), r.node)
                })?;
            if !inputs.contains_key(&r.input) {
                bail!(
                    "{}: node {:?} has no input {:?} (generate.comfyui.{key}); its inputs: {}",
                    path.display(),
                    r.node,
                    r.input,
                    inputs.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
        }
        Ok(Template {
            path: path.to_path_buf(),
            hash: blake3::hash(text.as_bytes()).to_hex()[..16].to_string(),
            json,
        })
    }

    /// The checkpoint the workflow loads.
    fn ckpt(&self) -> Option<String> {
        self.json.as_object()?.values().find_map(|n| {
            n.pointer("/inputs/ckpt_name")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
    }
}

pub struct ComfyUi {
    http: Http,
    t2i: Option<Template>,
    i2i: Option<Template>,
    prompt: InputRef,
    negative: Option<InputRef>,
    seed: InputRef,
    image: InputRef,
    strength: InputRef,
    model: Option<String>,
    timeout: Duration,
    poll: Duration,
}

impl ComfyUi {
    pub fn new(
        cfg: &GenerateConfig,
        endpoint: &str,
        key: Option<Secret>,
        timeout: Duration,
        retry: Retry,
    ) -> Result<Self> {
        let c: &ComfyUiGenConfig = &cfg.comfyui;
        let prompt = InputRef::parse(&c.prompt_input, "prompt_input")?;
        let negative = c
            .negative_input
            .as_deref()
            .map(|s| InputRef::parse(s, "negative_input"))
            .transpose()?;
        let seed = InputRef::parse(&c.seed_input, "seed_input")?;
        let image = InputRef::parse(&c.image_input, "image_input")?;
        let strength = InputRef::parse(&c.strength_input, "strength_input")?;
        let mut common: Vec<(&str, &InputRef)> =
            vec![("prompt_input", &prompt), ("seed_input", &seed)];
        if let Some(n) = &negative {
            common.push(("negative_input", n));
        }
        let load = |p: &Option<PathBuf>, extra: &[(&str, &InputRef)]| -> Result<Option<Template>> {
            let refs: Vec<(&str, &InputRef)> = common.iter().chain(extra).copied().collect();
            p.as_deref().map(|p| Template::load(p, &refs)).transpose()
        };
        let t2i = load(&c.workflow, &[])?;
        let i2i = load(
            &c.workflow_i2i,
            &[("image_input", &image), ("strength_input", &strength)],
        )?;
        if t2i.is_none() && i2i.is_none() {
            bail!("generate.comfyui.workflow and workflow_i2i are both unset: give at least one workflow template");
        }
        let model = cfg
            .model
            .clone()
            .or_else(|| t2i.as_ref().and_then(Template::ckpt))
            .or_else(|| i2i.as_ref().and_then(Template::ckpt));
        // One job (queue wait included) may take up to `timeout`; each call gets the same bound.
        Ok(ComfyUi {
            http: Http::new(endpoint, key, Auth::Bearer, timeout, retry),
            t2i,
            i2i,
            prompt,
            negative,
            seed,
            image,
            strength,
            model,
            timeout,
            poll: Duration::from_millis(c.poll_ms.max(10)),
        })
    }

    fn template(&self, mode: JobMode) -> Result<&Template> {
        match mode {
            JobMode::T2i => self.t2i.as_ref().context(
                "no text-to-image workflow: set generate.comfyui.workflow (or use --mode i2i)",
            ),
            JobMode::I2i => self.i2i.as_ref().context(
                "no image-to-image workflow: set generate.comfyui.workflow_i2i (or use --mode t2i)",
            ),
        }
    }

    /// Uploads the source image under a name fixed by its content; returns the LoadImage value.
    fn upload(&self, bytes: &[u8], id: &str) -> Result<String> {
        let mime = mime_of(bytes);
        let ext = mime.rsplit('/').next().unwrap_or("png");
        let name = format!("sv72-{}.{ext}", &id[..id.len().min(16)]);
        let form = Multipart::new(id)
            .file("image", &name, mime, bytes)
            .text("type", "input")
            .text("overwrite", "true")
            .finish();
        let what = "ComfyUI upload/image";
        let v = self
            .http
            .post(
                &self.http.url("/upload/image"),
                Body::Multipart(&form),
                Repeat::Safe,
                what,
            )?
            .json(what)?;
        let got = v
            .get("name")
            .and_then(Value::as_str)
            .with_context(|| format!("{what}: the answer has no `name`"))?;
        Ok(match v.get("subfolder").and_then(Value::as_str) {
            Some(sub) if !sub.is_empty() => format!("{sub}/{got}"),
            _ => got.to_string(),
        })
    }

    /// `/history/<id>`: `None` while the job is unknown or still running.
    fn history(&self, id: &str) -> Result<Option<Value>> {
        let what = "ComfyUI history";
        let v = self
            .http
            .get(
                &self.http.url(&format!("/history/{}", query_escape(id))),
                what,
            )?
            .json(what)?;
        let Some(entry) = v.get(id) else {
            return Ok(None);
        };
        let status = entry.get("status");
        let status_str = status
            .and_then(|s| s.get("status_str"))
            .and_then(Value::as_str);
        if status_str == Some("error") {
            bail!(
                "ComfyUI ran the workflow and failed: {}",
                execution_error(entry)
            );
        }
        let completed = status
            .and_then(|s| s.get("completed"))
            .and_then(Value::as_bool)
            .unwrap_or(true);
        Ok((completed && entry.get("outputs").is_some()).then(|| entry.clone()))
    }

    fn in_queue(&self, id: &str) -> Result<bool> {
        let v = self
            .http
            .get(&self.http.url("/queue"), "ComfyUI queue")?
            .json("ComfyUI queue")?;
        Ok(["queue_running", "queue_pending"].iter().any(|k| {
            v.get(*k).and_then(Value::as_array).is_some_and(|items| {
                items
                    .iter()
                    .any(|it| it.get(1).and_then(Value::as_str) == Some(id))
            })
        }))
    }

    /// Queues `wf` as `id`; returns the id the server uses. A `/prompt` whose answer was lost is
    /// looked for in the queue and the history before it is sent again.
    fn queue(&self, wf: &Value, id: &str, attempts: u32) -> Result<String> {
        let body = json!({ "prompt": wf, "client_id": "sv72", "prompt_id": id });
        let what = "ComfyUI prompt";
        let mut last = None;
        for _ in 0..attempts.max(1) {
            match self.http.post(
                &self.http.url("/prompt"),
                Body::Json(&body),
                Repeat::Unsafe,
                what,
            ) {
                Ok(r) => {
                    let v = r.json(what)?;
                    return Ok(v
                        .get("prompt_id")
                        .and_then(Value::as_str)
                        .unwrap_or(id)
                        .to_string());
                }
                Err(e) => {
                    if let Some(se) = e.downcast_ref::<StatusError>() {
                        if se.status == 400 {
                            return Err(e.context("ComfyUI rejected the workflow (check the node_errors above: a missing model or custom node?)"));
                        }
                        if !matches!(se.status, 500 | 502 | 504) {
                            return Err(e);
                        }
                    }
                    if self.in_queue(id).unwrap_or(false)
                        || self.history(id).ok().flatten().is_some()
                    {
                        return Ok(id.to_string());
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("{what}: no attempt made")))
    }

    fn fetch_images(&self, entry: &Value, seed: u64) -> Result<Vec<Image>> {
        let outputs = entry
            .get("outputs")
            .and_then(Value::as_object)
            .context("ComfyUI history entry has no outputs")?;
        let mut nodes: Vec<(&String, &Value)> = outputs.iter().collect();
        nodes.sort_by_key(|(k, _)| k.parse::<u64>().unwrap_or(u64::MAX));
        let mut images = Vec::new();
        for (_, out) in nodes {
            for img in out
                .get("images")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let kind = img.get("type").and_then(Value::as_str).unwrap_or("output");
                if kind != "output" {
                    continue; // previews
                }
                let file = img
                    .get("filename")
                    .and_then(Value::as_str)
                    .context("ComfyUI output image without a filename")?;
                let sub = img.get("subfolder").and_then(Value::as_str).unwrap_or("");
                let url = self.http.url(&format!(
                    "/view?filename={}&subfolder={}&type={}",
                    query_escape(file),
                    query_escape(sub),
                    query_escape(kind)
                ));
                let bytes = self.http.get(&url, "ComfyUI view")?.body;
                images.push(Image {
                    bytes,
                    seed: Some(seed),
                });
            }
        }
        if images.is_empty() {
            bail!("the workflow saved no image (does it end in a SaveImage node?)");
        }
        Ok(images)
    }
}

/// The exception message of a failed run, from its status messages.
fn execution_error(entry: &Value) -> String {
    entry
        .pointer("/status/messages")
        .and_then(Value::as_array)
        .and_then(|m| {
            m.iter().find_map(|ev| {
                (ev.get(0).and_then(Value::as_str) == Some("execution_error")).then(|| {
                    let d = ev.get(1).cloned().unwrap_or(Value::Null);
                    format!(
                        "node {} ({}): {}",
                        d.get("node_id").and_then(Value::as_str).unwrap_or("?"),
                        d.get("node_type").and_then(Value::as_str).unwrap_or("?"),
                        d.get("exception_message")
                            .and_then(Value::as_str)
                            .unwrap_or("?")
                    )
                })
            })
        })
        .unwrap_or_else(|| "no error message".into())
}

/// A UUID-shaped id fixed by the job, so the same job finds its earlier run.
fn prompt_id(template: &str, job: &Job<'_>, image: Option<&str>) -> String {
    let key = format!(
        "{template}|{}|{}|{}|{}|{:?}|{:?}",
        job.prompt.id,
        job.mode.as_str(),
        job.first,
        job.seed,
        job.strength,
        image
    );
    let h = blake3::hash(key.as_bytes()).to_hex();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl Backend for ComfyUi {
    fn kind(&self) -> GenBackend {
        GenBackend::Comfyui
    }

    fn model(&self) -> Option<String> {
        self.model.clone()
    }

    fn max_batch(&self) -> u32 {
        1
    }

    fn uses_strength(&self) -> bool {
        true
    }

    fn generate(&self, job: &Job<'_>) -> Result<Generated> {
        let t = self.template(job.mode)?;
        let mut wf = t.json.clone();
        if let Some(m) = &self.model {
            // The configured model replaces the template's checkpoint.
            if let Some(nodes) = wf.as_object_mut() {
                for n in nodes.values_mut() {
                    if let Some(inputs) = n.get_mut("inputs").and_then(Value::as_object_mut) {
                        if inputs.get("ckpt_name").is_some_and(Value::is_string) {
                            inputs.insert("ckpt_name".into(), json!(m));
                        }
                    }
                }
            }
        }
        self.prompt.set(&mut wf, json!(job.prompt.prompt));
        if let (Some(n), Some(text)) = (&self.negative, &job.prompt.negative) {
            n.set(&mut wf, json!(text));
        }
        self.seed.set(&mut wf, json!(job.seed));
        let mut uploaded = None;
        if job.mode == JobMode::I2i {
            let src = job
                .source
                .context("image-to-image without a source image")?;
            let name = self.upload(&src.bytes, &src.id)?;
            self.image.set(&mut wf, json!(name));
            self.strength
                .set(&mut wf, json!(job.strength.unwrap_or(0.5)));
            uploaded = Some(name);
        }
        let id = prompt_id(&t.hash, job, uploaded.as_deref());
        let entry = match self.history(&id)? {
            // Finished before (a run killed after queueing it): take its images.
            Some(e) => e,
            None => {
                let id = if self.in_queue(&id)? {
                    id
                } else {
                    self.queue(&wf, &id, 3)?
                };
                let start = Instant::now();
                loop {
                    if let Some(e) = self.history(&id)? {
                        break e;
                    }
                    if start.elapsed() > self.timeout {
                        bail!(
                            "ComfyUI job {id} ({}) not finished after {} s (generate.timeout_s)",
                            t.path.display(),
                            self.timeout.as_secs()
                        );
                    }
                    std::thread::sleep(self.poll);
                }
            }
        };
        let mut images = self.fetch_images(&entry, job.seed)?;
        images.truncate(job.count as usize);
        Ok(Generated {
            images,
            model: self.model.clone(),
            cost_usd: None,
        })
    }
}
