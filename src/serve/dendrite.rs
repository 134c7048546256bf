//! The validator side of the axon protocol: one signed `ImageSynapse` request as a bittensor
//! dendrite sends it (`sv72 query`, smoke tests of a running `sv72 serve`).

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine as _;

use super::protocol::{now_ns, signature_message, AXON_VERSION, EMPTY_BODY_HASH, SYNAPSE_NAME};
use crate::keys::SigningKey;

/// Seed of the default query key: a fixed, public demo key, never a real validator's.
pub const DEMO_SEED: [u8; 32] = [0x72; 32];

/// The querying key from a 64-hex-digit seed (optional `0x`), else [`DEMO_SEED`].
pub fn query_key(seed_hex: Option<&str>) -> Result<SigningKey> {
    let seed = match seed_hex {
        None => DEMO_SEED,
        Some(h) => {
            let b = hex::decode(h.trim().trim_start_matches("0x"))
                .map_err(|e| anyhow::anyhow!("--hotkey-seed: not hex ({e}); give 64 hex digits"))?;
            <[u8; 32]>::try_from(b.as_slice()).map_err(|_| {
                anyhow::anyhow!(
                    "--hotkey-seed: {} bytes, expected 32 (64 hex digits)",
                    b.len()
                )
            })?
        }
    };
    SigningKey::from_seed(&seed)
}

/// What an axon answered.
#[derive(Debug, Clone)]
pub struct QueryAnswer {
    /// HTTP status.
    pub status: u16,
    /// `prediction` of the returned synapse (when status is 200).
    pub prediction: Option<f64>,
    /// The axon's status message.
    pub message: String,
}

/// Sends one signed `ImageSynapse` with `image_bytes` to `addr` for axon hotkey `axon_hotkey`.
pub fn query_axon(
    addr: SocketAddr,
    key: &SigningKey,
    axon_hotkey: &str,
    image_bytes: &[u8],
    timeout: Duration,
) -> Result<QueryAnswer> {
    let image = base64::engine::general_purpose::STANDARD.encode(image_bytes);
    let nonce = now_ns();
    let uuid = uuid::Uuid::new_v4().to_string();
    let me = key.ss58();
    let timeout_s = timeout.as_secs_f64();
    let msg = signature_message(nonce, &me, axon_hotkey, Some(&uuid), Some(EMPTY_BODY_HASH));
    let signature = key.sign_hex(msg.as_bytes());
    let body = serde_json::json!({
        "name": SYNAPSE_NAME, "timeout": timeout_s, "total_size": 0, "header_size": 0,
        "dendrite": {"status_code": null, "status_message": null, "process_time": null,
                     "ip": "127.0.0.1", "port": null, "version": AXON_VERSION, "nonce": nonce as u64,
                     "uuid": uuid, "hotkey": me, "signature": signature},
        "axon": {"status_code": null, "status_message": null, "process_time": null,
                 "ip": addr.ip().to_string(), "port": addr.port(), "version": null,
                 "nonce": null, "uuid": null, "hotkey": axon_hotkey, "signature": null},
        "computed_body_hash": "", "testnet_label": -1, "image": image, "prediction": -1.0})
    .to_string();
    let headers = [
        ("name", SYNAPSE_NAME.to_string()),
        ("timeout", format!("{timeout_s:?}")),
        ("bt_header_axon_ip", addr.ip().to_string()),
        ("bt_header_axon_port", addr.port().to_string()),
        ("bt_header_axon_hotkey", axon_hotkey.to_string()),
        ("bt_header_dendrite_ip", "127.0.0.1".to_string()),
        ("bt_header_dendrite_version", AXON_VERSION.to_string()),
        ("bt_header_dendrite_nonce", nonce.to_string()),
        ("bt_header_dendrite_uuid", uuid.clone()),
        ("bt_header_dendrite_hotkey", me.clone()),
        ("bt_header_dendrite_signature", signature.clone()),
        ("computed_body_hash", EMPTY_BODY_HASH.to_string()),
        ("Content-Type", "application/json".to_string()),
    ];
    // A dendrite talks to the axon directly (bittensor's aiohttp client ignores proxy
    // variables), so no proxy from the environment either.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_connect(Some(Duration::from_secs(5)))
        .timeout_global(Some(timeout + Duration::from_secs(2)))
        .build()
        .into();
    let mut req = agent.post(format!("http://{addr}/{SYNAPSE_NAME}"));
    for (k, v) in &headers {
        req = req.header(*k, v);
    }
    let mut resp = req
        .send(body.as_bytes())
        .with_context(|| format!("cannot reach the axon at {addr}"))?;
    let status = resp.status().as_u16();
    let header = resp
        .headers()
        .get("bt_header_axon_status_message")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let raw = resp
        .body_mut()
        .read_to_vec()
        .with_context(|| format!("reading the answer from {addr}"))?;
    let json: Option<serde_json::Value> = serde_json::from_slice(&raw).ok();
    let message = header
        .or_else(|| {
            json.as_ref()
                .and_then(|j| j.get("message").and_then(|m| m.as_str()).map(String::from))
        })
        .unwrap_or_default();
    let prediction = if status == 200 {
        json.as_ref()
            .and_then(|j| j.get("prediction"))
            .and_then(|p| p.as_f64())
    } else {
        None
    };
    Ok(QueryAnswer {
        status,
        prediction,
        message,
    })
}

/// What `sv72 query` sends.
#[derive(Debug, Clone)]
pub struct QueryRequest {
    /// The axon, `HOST:PORT`.
    pub axon: String,
    /// The axon's hotkey (SS58) the request is signed for.
    pub axon_hotkey: String,
    pub image: PathBuf,
    /// Seconds to wait for the answer.
    pub timeout: f64,
    /// Seconds to keep retrying the connection while the axon starts up.
    pub wait: f64,
}

/// Checks the request, waits for the axon to accept connections, sends the image and returns
/// the prediction; an axon that does not answer with one is an error naming its status.
pub fn query(req: &QueryRequest, key: &SigningKey) -> Result<(f64, QueryAnswer)> {
    let addr = req
        .axon
        .to_socket_addrs()
        .with_context(|| format!("--axon {:?}: expected HOST:PORT", req.axon))?
        .next()
        .with_context(|| format!("--axon {:?} resolves to no address", req.axon))?;
    if !(req.timeout.is_finite() && req.timeout > 0.0) {
        bail!(
            "--timeout {} must be a positive number of seconds",
            req.timeout
        );
    }
    if !(req.wait.is_finite() && req.wait >= 0.0) {
        bail!(
            "--wait {} must be a non-negative number of seconds",
            req.wait
        );
    }
    let bytes = std::fs::read(&req.image)
        .with_context(|| format!("--image: cannot read {}", req.image.display()))?;
    wait_for_axon(addr, Duration::from_secs_f64(req.wait))?;
    let ans = query_axon(
        addr,
        key,
        &req.axon_hotkey,
        &bytes,
        Duration::from_secs_f64(req.timeout),
    )?;
    match ans.prediction {
        Some(p) => Ok((p, ans)),
        None => bail!(
            "axon {addr} answered HTTP {}: {} (querying as {})",
            ans.status,
            ans.message,
            key.ss58()
        ),
    }
}

/// Waits until `addr` accepts TCP connections, for at most `wait`.
fn wait_for_axon(addr: SocketAddr, wait: Duration) -> Result<()> {
    let deadline = Instant::now() + wait;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                bail!("cannot connect to the axon at {addr}: {e} (is `sv72 serve` running? --wait SECS retries while it starts)")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}
