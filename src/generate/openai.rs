//! The OpenAI-compatible images API: `POST /v1/images/generations` (JSON) and
//! `POST /v1/images/edits` (multipart, the source image as `image`). Both answer
//! `{created, data: [{b64_json} | {url}], usage?}`. Requests are paid and unseeded, so one that
//! may have been carried out is never sent again (a re-run retries it).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::a1111::decode_b64;
use super::http::{mime_of, Auth, Body, Http, Multipart, Repeat, Retry, Secret};
use super::{Backend, Generated, Image, Job, JobMode};
use crate::config::{GenBackend, GenerateConfig, ImageResponseFormat, OpenAiGenConfig};

pub struct OpenAi {
    http: Http,
    model: String,
    size: String,
    o: OpenAiGenConfig,
}

impl OpenAi {
    pub fn new(
        cfg: &GenerateConfig,
        endpoint: &str,
        key: Option<Secret>,
        timeout: Duration,
        retry: Retry,
    ) -> Result<Self> {
        let model = cfg.model.clone().filter(|m| !m.trim().is_empty()).context(
            "generate.model: the OpenAI images API needs a model name (e.g. gpt-image-1)",
        )?;
        // Accept the base URL with or without the `/v1` suffix.
        let base = endpoint.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        Ok(OpenAi {
            http: Http::new(base, key, Auth::Bearer, timeout, retry),
            model,
            size: cfg
                .openai
                .size
                .clone()
                .unwrap_or_else(|| format!("{}x{}", cfg.width, cfg.height)),
            o: cfg.openai.clone(),
        })
    }

    fn prompt(&self, job: &Job<'_>) -> String {
        if self.o.negative_in_prompt {
            job.prompt_with_avoid()
        } else {
            job.prompt.prompt.clone()
        }
    }

    fn format(&self) -> Option<&'static str> {
        self.o.response_format.map(|f| match f {
            ImageResponseFormat::B64Json => "b64_json",
            ImageResponseFormat::Url => "url",
        })
    }
}

/// A reported cost in US dollars: `usage.cost` or `cost` (gateways such as OpenRouter add it;
/// OpenAI itself reports tokens only).
fn reported_cost(v: &Value) -> Option<f64> {
    v.pointer("/usage/cost")
        .or_else(|| v.get("cost"))
        .and_then(Value::as_f64)
        .filter(|c| c.is_finite() && *c >= 0.0)
}

impl Backend for OpenAi {
    fn kind(&self) -> GenBackend {
        GenBackend::Openai
    }

    fn model(&self) -> Option<String> {
        Some(self.model.clone())
    }

    fn max_batch(&self) -> u32 {
        10
    }

    fn uses_strength(&self) -> bool {
        false
    }

    fn generate(&self, job: &Job<'_>) -> Result<Generated> {
        let prompt = self.prompt(job);
        let (what, reply) = match (job.mode, job.source) {
            (JobMode::T2i, _) => {
                let mut body = json!({
                    "model": self.model,
                    "prompt": prompt,
                    "n": job.count,
                    "size": self.size,
                });
                if let Some(q) = &self.o.quality {
                    body["quality"] = json!(q);
                }
                if let Some(f) = self.format() {
                    body["response_format"] = json!(f);
                }
                let what = "OpenAI images/generations";
                let url = self.http.url("/v1/images/generations");
                (
                    what,
                    self.http
                        .post(&url, Body::Json(&body), Repeat::Unsafe, what)?,
                )
            }
            (JobMode::I2i, Some(src)) => {
                let mime = mime_of(&src.bytes);
                let ext = mime.rsplit('/').next().unwrap_or("png");
                let mut form = Multipart::new(&format!("{}{}", job.prompt.id, job.first))
                    .text("model", &self.model)
                    .text("prompt", &prompt)
                    .text("n", &job.count.to_string())
                    .text("size", &self.size);
                if let Some(q) = &self.o.quality {
                    form = form.text("quality", q);
                }
                if let Some(f) = self.format() {
                    form = form.text("response_format", f);
                }
                let form = form
                    .file("image", &format!("source.{ext}"), mime, &src.bytes)
                    .finish();
                let what = "OpenAI images/edits";
                let url = self.http.url("/v1/images/edits");
                (
                    what,
                    self.http
                        .post(&url, Body::Multipart(&form), Repeat::Unsafe, what)?,
                )
            }
            (JobMode::I2i, None) => bail!("image-to-image without a source image"),
        };
        let v = reply.json(what)?;
        let data = v
            .get("data")
            .and_then(Value::as_array)
            .with_context(|| format!("{what}: the answer has no `data` list"))?;
        let mut images = Vec::new();
        for (i, d) in data.iter().enumerate() {
            let bytes = if let Some(b) = d.get("b64_json").and_then(Value::as_str) {
                decode_b64(b, what)?
            } else if let Some(u) = d.get("url").and_then(Value::as_str) {
                // A CDN link: a plain GET (no key: it is another origin), safe to repeat.
                self.http
                    .get(u, &format!("{what}: downloading image {i}"))?
                    .body
            } else {
                bail!("{what}: item {i} of `data` has neither `b64_json` nor `url`");
            };
            images.push(Image { bytes, seed: None });
        }
        Ok(Generated {
            images,
            model: v
                .get("model")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| Some(self.model.clone())),
            cost_usd: reported_cost(&v),
        })
    }
}
