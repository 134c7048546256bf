//! `sv72 query`: one signed `ImageSynapse` request to an axon, as a validator's dendrite sends
//! it; prints the prediction. For demos and smoke tests of a running `sv72 serve`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine as _;

use super::Ctx;
use crate::keys::{default_wallet_path, read_wallet_hotkey, ss58_decode, SigningKey};
use crate::serve::protocol::{messages::uuid4, now_ns, signature_message, EMPTY_BODY_HASH};

/// Seed of the default query key: a fixed, public demo key, never a real validator's.
pub const DEMO_SEED: [u8; 32] = [0x72; 32];

/// Flags of `sv72 query`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The axon, `HOST:PORT`.
    #[arg(
        long,
        value_name = "HOST:PORT",
        required_unless_present = "print_hotkey"
    )]
    pub axon: Option<String>,
    /// Image file sent as the synapse's base64 `image`.
    #[arg(long, value_name = "FILE", required_unless_present = "print_hotkey")]
    pub image: Option<PathBuf>,
    /// 32-byte sr25519 mini-secret (64 hex digits) of the querying key (default: a fixed demo
    /// key); the axon only answers keys in its metagraph with a validator permit and stake.
    #[arg(long, value_name = "HEX")]
    pub hotkey_seed: Option<String>,
    /// The axon's hotkey (SS58) that the request is signed for (default: this machine's wallet
    /// serve.wallet_name/serve.wallet_hotkey).
    #[arg(long, value_name = "SS58")]
    pub axon_hotkey: Option<String>,
    /// Bittensor wallets folder (for the default --axon-hotkey).
    #[arg(long, value_name = "DIR")]
    pub wallet_path: Option<PathBuf>,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Keep retrying the connection this many seconds while the axon starts up.
    #[arg(long, default_value_t = 0.0, value_name = "SECS")]
    pub wait: f64,
    /// Print the querying key's SS58 address (to put in a metagraph) and exit.
    #[arg(long)]
    pub print_hotkey: bool,
}

/// The querying key from `--hotkey-seed` (hex, optional `0x`), else [`DEMO_SEED`].
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
    let uuid = uuid4();
    let me = key.ss58();
    let timeout_s = timeout.as_secs_f64();
    let msg = signature_message(nonce, &me, axon_hotkey, Some(&uuid), Some(EMPTY_BODY_HASH));
    let signature = key.sign_hex(msg.as_bytes());
    let body = serde_json::json!({
        "name": "ImageSynapse", "timeout": timeout_s, "total_size": 0, "header_size": 0,
        "dendrite": {"status_code": null, "status_message": null, "process_time": null,
                     "ip": "127.0.0.1", "port": null, "version": 9012002, "nonce": nonce as u64,
                     "uuid": uuid, "hotkey": me, "signature": signature},
        "axon": {"status_code": null, "status_message": null, "process_time": null,
                 "ip": addr.ip().to_string(), "port": addr.port(), "version": null,
                 "nonce": null, "uuid": null, "hotkey": axon_hotkey, "signature": null},
        "computed_body_hash": "", "testnet_label": -1, "image": image, "prediction": -1.0})
    .to_string();
    let headers = [
        ("name", "ImageSynapse".to_string()),
        ("timeout", format!("{timeout_s:?}")),
        ("bt_header_axon_ip", addr.ip().to_string()),
        ("bt_header_axon_port", addr.port().to_string()),
        ("bt_header_axon_hotkey", axon_hotkey.to_string()),
        ("bt_header_dendrite_ip", "127.0.0.1".to_string()),
        ("bt_header_dendrite_version", "9012002".to_string()),
        ("bt_header_dendrite_nonce", nonce.to_string()),
        ("bt_header_dendrite_uuid", uuid.clone()),
        ("bt_header_dendrite_hotkey", me.clone()),
        ("bt_header_dendrite_signature", signature.clone()),
        ("computed_body_hash", EMPTY_BODY_HASH.to_string()),
        ("Content-Type", "application/json".to_string()),
    ];
    let mut head = format!("POST /ImageSynapse HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in &headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("cannot connect to the axon at {addr}"))?;
    s.set_read_timeout(Some(timeout + Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("reading the answer from {addr}"))?;
    parse_answer(&raw).with_context(|| format!("bad HTTP answer from {addr}"))
}

fn parse_answer(raw: &[u8]) -> Result<QueryAnswer> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let status: u16 = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("no HTTP status line")?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let message = header("bt_header_axon_status_message")
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

fn resolve_addr(axon: &str) -> Result<SocketAddr> {
    axon.to_socket_addrs()
        .with_context(|| format!("--axon {axon:?}: expected HOST:PORT"))?
        .next()
        .with_context(|| format!("--axon {axon:?} resolves to no address"))
}

fn read_image(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("--image: cannot read {}", p.display()))
}

/// Waits until `addr` accepts TCP connections, for at most `wait`.
fn wait_for_axon(addr: SocketAddr, wait: Duration) -> Result<()> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(_) => return Ok(()),
            Err(e) if std::time::Instant::now() >= deadline => {
                bail!("cannot connect to the axon at {addr}: {e} (is `sv72 serve` running? --wait SECS retries while it starts)")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Runs `sv72 query`.
pub fn run(args: Args, ctx: &Ctx) -> Result<ExitCode> {
    let key = query_key(args.hotkey_seed.as_deref())?;
    if args.print_hotkey {
        println!("{}", key.ss58());
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(axon), Some(image)) = (&args.axon, &args.image) else {
        bail!("give --axon HOST:PORT and --image FILE");
    };
    let addr = resolve_addr(axon)?;
    let axon_hotkey = match &args.axon_hotkey {
        Some(h) => {
            ss58_decode(h).map_err(|e| anyhow::anyhow!("--axon-hotkey: {e}"))?;
            h.clone()
        }
        None => read_wallet_hotkey(
            &args.wallet_path.clone().unwrap_or_else(default_wallet_path),
            &ctx.config.serve.wallet_name,
            &ctx.config.serve.wallet_hotkey,
        )
        .context("no --axon-hotkey given and no local wallet hotkey")?,
    };
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        bail!(
            "--timeout {} must be a positive number of seconds",
            args.timeout
        );
    }
    if !(args.wait.is_finite() && args.wait >= 0.0) {
        bail!(
            "--wait {} must be a non-negative number of seconds",
            args.wait
        );
    }
    let bytes = read_image(image)?;
    wait_for_axon(addr, Duration::from_secs_f64(args.wait))?;
    let ans = query_axon(
        addr,
        &key,
        &axon_hotkey,
        &bytes,
        Duration::from_secs_f64(args.timeout),
    )?;
    match ans.prediction {
        Some(p) => {
            println!("{p}");
            eprintln!(
                "{}: {} ({})",
                image.display(),
                if p > 0.5 { "roadwork" } else { "none" },
                ans.message
            );
            Ok(ExitCode::SUCCESS)
        }
        None => bail!(
            "axon {addr} answered HTTP {}: {} (querying as {})",
            ans.status,
            ans.message,
            key.ss58()
        ),
    }
}
