//! Automatic1111 / Forge web UI API (`--api`): `POST /sdapi/v1/txt2img` and `/sdapi/v1/img2img`.
//! Both answer `{images: [base64 PNG], parameters, info}` where `info` is a JSON string with
//! `all_seeds` and `sd_model_name`. The server is the user's own and every request is seeded,
//! so a request that failed half way is safe to send again.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine;
use serde_json::{json, Value};

use super::http::{Auth, Body, Http, Repeat, Retry, Secret};
use super::{Backend, Generated, Image, Job, JobMode};
use crate::config::{GenBackend, GenerateConfig};

pub struct A1111 {
    http: Http,
    model: Option<String>,
    width: u32,
    height: u32,
    steps: u32,
    cfg_scale: f64,
    sampler: Option<String>,
}

impl A1111 {
    pub fn new(
        cfg: &GenerateConfig,
        endpoint: &str,
        key: Option<Secret>,
        timeout: Duration,
        retry: Retry,
    ) -> Self {
        A1111 {
            http: Http::new(endpoint, key, Auth::Basic, timeout, retry),
            model: cfg.model.clone(),
            width: cfg.width,
            height: cfg.height,
            steps: cfg.steps,
            cfg_scale: cfg.cfg_scale,
            sampler: cfg.sampler.clone(),
        }
    }
}

/// The source's size scaled so its long side is `long`, in multiples of 8 (what SD needs).
pub fn i2i_size(w: u32, h: u32, long: u32) -> (u32, u32) {
    let scale = f64::from(long) / f64::from(w.max(h).max(1));
    let r8 = |v: u32| (((f64::from(v) * scale) / 8.0).round() as u32 * 8).max(8);
    (r8(w), r8(h))
}

/// Decodes one base64 image (a `data:` prefix is tolerated).
pub fn decode_b64(s: &str, what: &str) -> Result<Vec<u8>> {
    let raw = s.split_once("base64,").map_or(s, |(_, b)| b);
    base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .with_context(|| format!("{what}: an image is not valid base64"))
}

impl Backend for A1111 {
    fn kind(&self) -> GenBackend {
        GenBackend::A1111
    }

    fn model(&self) -> Option<String> {
        self.model.clone()
    }

    fn max_batch(&self) -> u32 {
        64
    }

    fn uses_strength(&self) -> bool {
        true
    }

    fn generate(&self, job: &Job<'_>) -> Result<Generated> {
        let mut body = json!({
            "prompt": job.prompt.prompt,
            "negative_prompt": job.prompt.negative.clone().unwrap_or_default(),
            "seed": job.seed,
            "batch_size": job.count,
            "n_iter": 1,
            "steps": self.steps,
            "cfg_scale": self.cfg_scale,
            "width": self.width,
            "height": self.height,
            "send_images": true,
            "save_images": false,
        });
        if let Some(s) = &self.sampler {
            body["sampler_name"] = json!(s);
        }
        if let Some(m) = &self.model {
            body["override_settings"] = json!({ "sd_model_checkpoint": m });
            body["override_settings_restore_afterwards"] = json!(true);
        }
        let path = match (job.mode, job.source) {
            (JobMode::T2i, _) => "/sdapi/v1/txt2img",
            (JobMode::I2i, Some(src)) => {
                let (w, h) = i2i_size(src.width, src.height, self.width.max(self.height));
                body["width"] = json!(w);
                body["height"] = json!(h);
                body["init_images"] =
                    json!([base64::engine::general_purpose::STANDARD.encode(&src.bytes)]);
                body["denoising_strength"] = json!(job.strength.unwrap_or(0.5));
                "/sdapi/v1/img2img"
            }
            (JobMode::I2i, None) => bail!("image-to-image without a source image"),
        };
        let what = format!("A1111 {}", &path[10..]);
        let v = self
            .http
            .post(&self.http.url(path), Body::Json(&body), Repeat::Safe, &what)?
            .json(&what)?;
        let images = v
            .get("images")
            .and_then(Value::as_array)
            .with_context(|| format!("{what}: the answer has no `images` list"))?;
        // `info` is itself JSON, as a string.
        let info: Value = v
            .get("info")
            .and_then(Value::as_str)
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(Value::Null);
        let seeds: Vec<u64> = info
            .get("all_seeds")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        // Extensions may append extra pictures (e.g. ControlNet maps) after the batch.
        let mut out = Vec::new();
        for (i, b64) in images.iter().take(job.count as usize).enumerate() {
            let s = b64
                .as_str()
                .with_context(|| format!("{what}: image {i} is not a string"))?;
            out.push(Image {
                bytes: decode_b64(s, &what)?,
                seed: Some(seeds.get(i).copied().unwrap_or(job.seed + i as u64)),
            });
        }
        Ok(Generated {
            images: out,
            model: info
                .get("sd_model_name")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .or_else(|| self.model.clone()),
            cost_usd: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i2i_size_keeps_aspect_in_multiples_of_8() {
        assert_eq!(i2i_size(640, 480, 1024), (1024, 768));
        assert_eq!(i2i_size(37, 53, 512), (360, 512));
        assert_eq!(i2i_size(1, 1000, 512), (8, 512));
    }
}
