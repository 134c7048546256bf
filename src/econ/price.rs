//! TAO/USD, which is not on chain: a flag, the config, or a JSON price endpoint.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chain::rpc::snippet;

/// A TAO price in USD and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaoUsd {
    pub usd: f64,
    /// `--tao-usd`, `econ.tao_usd`, or the URL and pointer read.
    pub source: String,
    pub at: DateTime<Utc>,
}

/// Largest price answer accepted.
const MAX_BYTES: u64 = 1 << 20;

/// GETs `url` and reads the number at JSON `pointer` (RFC 6901, e.g. `/bittensor/usd`); a string
/// holding a number is accepted too (some APIs quote prices).
pub fn fetch_tao_usd(url: &str, pointer: &str, timeout: Duration) -> Result<TaoUsd> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("econ.price_url {url:?} is not an http:// or https:// URL");
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into();
    let mut resp = agent
        .get(url)
        .header("Accept", "application/json")
        .call()
        .with_context(|| format!("cannot reach the TAO price endpoint {url} (econ.price_url)"))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_BYTES)
        .read_to_string()
        .with_context(|| format!("reading the answer of the TAO price endpoint {url}"))?;
    if status != 200 {
        bail!(
            "the TAO price endpoint {url} answered HTTP {status}: {}",
            snippet(&body)
        );
    }
    let v: Value = serde_json::from_str(&body).with_context(|| {
        format!(
            "the TAO price endpoint {url} answered with something that is not JSON: {}",
            snippet(&body)
        )
    })?;
    let at = v.pointer(pointer).with_context(|| {
        format!(
            "the answer of the TAO price endpoint {url} has nothing at econ.price_pointer \
             {pointer:?}: {}",
            snippet(&body)
        )
    })?;
    let usd = match at {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|p| p.is_finite() && *p > 0.0)
    .with_context(|| {
        format!(
            "the TAO price endpoint {url} gives {at} at {pointer:?}, not a positive price in USD"
        )
    })?;
    Ok(TaoUsd {
        usd,
        source: format!("{url} at {pointer}"),
        at: Utc::now(),
    })
}
