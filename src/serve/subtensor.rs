//! Reads a subnet's validator set from a subtensor node and turns it into the snapshot that
//! `sv72 serve` loads (`serve::metagraph`).
//!
//! This mirrors what bittensor 9.x/10.x `Metagraph.sync(lite=True)` reads, pinned to one block:
//!
//! * `state_call("NeuronInfoRuntimeApi_get_neurons_lite", SCALE(netuid: u16))`: hotkeys, uids
//!   and validator permits (`Vec<NeuronInfoLite<AccountId32>>`);
//! * `state_call("SubnetInfoRuntimeApi_get_subnet_state", SCALE(netuid: u16))`: the stake
//!   weights; bittensor's `metagraph.S` is `SubnetState.total_stake` (alpha plus weighted root
//!   TAO), not the lite info's stake list, which holds the hotkey's alpha stake only.
//!
//! Nodes whose runtime lacks a runtime API are asked through the older custom RPC methods
//! (`neuronInfo_getNeuronsLite`, `subnetInfo_getSubnetState`) which return the same SCALE bytes.
//!
//! Only HTTP JSON-RPC is spoken: substrate nodes serve it on the websocket port, so `ws://` and
//! `wss://` endpoints are mapped to `http://` and `https://`.

use std::cell::Cell;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::metagraph::Neuron;
use crate::keys::{ss58_encode, SS58_FORMAT};

/// Bittensor's main network entry point (`bittensor.core.settings.FINNEY_ENTRYPOINT`).
pub const FINNEY_ENDPOINT: &str = "wss://entrypoint-finney.opentensor.ai:443";
/// Bittensor's test network entry point.
pub const TEST_ENDPOINT: &str = "wss://test.finney.opentensor.ai:443";
/// Bittensor's archive node entry point.
pub const ARCHIVE_ENDPOINT: &str = "wss://archive.chain.opentensor.ai:443";
/// A local subtensor node.
pub const LOCAL_ENDPOINT: &str = "ws://127.0.0.1:9944";
/// NATIX StreetVision's subnet.
pub const NATIX_NETUID: u16 = 72;
/// Rao per TAO (and per alpha).
pub const RAO_PER_TAO: f64 = 1e9;

/// Turns an endpoint or a bittensor network name (`finney`, `test`, `archive`, `local`) into the
/// HTTP URL JSON-RPC is posted to.
pub fn resolve_endpoint(endpoint: &str) -> Result<String> {
    let e = endpoint.trim();
    let e = match e {
        "finney" => FINNEY_ENDPOINT,
        "test" => TEST_ENDPOINT,
        "archive" => ARCHIVE_ENDPOINT,
        "local" => LOCAL_ENDPOINT,
        other => other,
    };
    let lower = e.to_ascii_lowercase();
    let url = if let Some(rest) = lower.strip_prefix("ws://") {
        format!("http://{}", &e[e.len() - rest.len()..])
    } else if let Some(rest) = lower.strip_prefix("wss://") {
        format!("https://{}", &e[e.len() - rest.len()..])
    } else if lower.starts_with("http://") || lower.starts_with("https://") {
        e.to_string()
    } else {
        bail!(
            "endpoint {endpoint:?} is not a ws://, wss://, http:// or https:// URL nor one of the \
             networks finney, test, archive, local"
        );
    };
    let host = url.split("://").nth(1).unwrap_or("");
    if host.is_empty() || host.starts_with('/') {
        bail!("endpoint {endpoint:?} has no host");
    }
    Ok(url)
}

// ---------------------------------------------------------------------------------------------
// SCALE decoding

/// A cursor over SCALE-encoded bytes; every read names what it reads so a short or malformed
/// payload says where it broke.
pub struct ScaleReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> ScaleReader<'a> {
    /// Starts at the first byte of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if self.remaining() < n {
            bail!(
                "truncated SCALE payload: `{what}` at byte {} needs {n} byte(s) but only {} of {} \
                 are left",
                self.pos,
                self.remaining(),
                self.buf.len()
            );
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    /// A fixed-width `u8`.
    pub fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    /// A fixed-width little-endian `u16`.
    pub fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    /// A fixed-width little-endian `u32`.
    pub fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// A fixed-width little-endian `u64`.
    pub fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A fixed-width little-endian `u128`.
    pub fn u128(&mut self, what: &str) -> Result<u128> {
        Ok(u128::from_le_bytes(self.array(what)?))
    }

    /// A `bool`: one byte, 0 or 1.
    pub fn bool(&mut self, what: &str) -> Result<bool> {
        let at = self.pos;
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            b => bail!("malformed SCALE payload: `{what}` at byte {at} is {b:#04x}, not a bool"),
        }
    }

    /// A 32-byte `AccountId32`.
    pub fn account(&mut self, what: &str) -> Result<[u8; 32]> {
        self.array(what)
    }

    /// A `Compact<uN>` of any width (up to `u128`).
    pub fn compact(&mut self, what: &str) -> Result<u128> {
        let at = self.pos;
        let first = self.u8(what)?;
        let v = match first & 0b11 {
            0b00 => (first >> 2) as u128,
            0b01 => (u16::from_le_bytes([first, self.u8(what)?]) >> 2) as u128,
            0b10 => {
                let rest: [u8; 3] = self.array(what)?;
                (u32::from_le_bytes([first, rest[0], rest[1], rest[2]]) >> 2) as u128
            }
            _ => {
                // Big-integer mode: the upper six bits say how many bytes follow, minus four.
                let n = (first >> 2) as usize + 4;
                if n > 16 {
                    bail!(
                        "malformed SCALE payload: `{what}` at byte {at} is a {n}-byte compact \
                         integer; at most 16 bytes (u128) are supported"
                    );
                }
                let bytes = self.take(n, what)?;
                let mut le = [0u8; 16];
                le[..n].copy_from_slice(bytes);
                u128::from_le_bytes(le)
            }
        };
        Ok(v)
    }

    /// A `Compact<u16>`.
    pub fn compact_u16(&mut self, what: &str) -> Result<u16> {
        let at = self.pos;
        let v = self.compact(what)?;
        u16::try_from(v).map_err(|_| {
            anyhow!("malformed SCALE payload: `{what}` at byte {at} is {v}, too large for a u16")
        })
    }

    /// A `Compact<u64>`.
    pub fn compact_u64(&mut self, what: &str) -> Result<u64> {
        let at = self.pos;
        let v = self.compact(what)?;
        u64::try_from(v).map_err(|_| {
            anyhow!("malformed SCALE payload: `{what}` at byte {at} is {v}, too large for a u64")
        })
    }

    /// The compact length prefix of a `Vec`, checked against the bytes left (each item takes at
    /// least `min_item_bytes`) so garbage cannot ask for a huge allocation.
    pub fn vec_len(&mut self, what: &str, min_item_bytes: usize) -> Result<usize> {
        let at = self.pos;
        let n = self.compact(what)?;
        let fits = usize::try_from(n)
            .ok()
            .filter(|&n| n.saturating_mul(min_item_bytes.max(1)) <= self.remaining());
        fits.ok_or_else(|| {
            anyhow!(
                "truncated SCALE payload: `{what}` at byte {at} announces {n} item(s) but only \
                 {} byte(s) are left",
                self.remaining()
            )
        })
    }

    /// A `Vec<T>` read item by item with `f`.
    pub fn vec<T>(
        &mut self,
        what: &str,
        min_item_bytes: usize,
        mut f: impl FnMut(&mut Self) -> Result<T>,
    ) -> Result<Vec<T>> {
        let n = self.vec_len(what, min_item_bytes)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(f(self)?);
        }
        Ok(out)
    }

    /// Fails unless every byte was read.
    pub fn finish(&self, what: &str) -> Result<()> {
        if self.remaining() != 0 {
            bail!(
                "malformed SCALE payload: {} unread byte(s) after {what} (payload has {} bytes); \
                 the node's runtime may use a newer layout",
                self.remaining(),
                self.buf.len()
            );
        }
        Ok(())
    }
}

/// `AxonInfo` of the subtensor pallet (fixed-width fields).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AxonInfo {
    pub block: u64,
    pub version: u32,
    pub ip: u128,
    pub port: u16,
    pub ip_type: u8,
    pub protocol: u8,
    pub placeholder1: u8,
    pub placeholder2: u8,
}

impl AxonInfo {
    fn decode(r: &mut ScaleReader) -> Result<Self> {
        Ok(Self {
            block: r.u64("axon_info.block")?,
            version: r.u32("axon_info.version")?,
            ip: r.u128("axon_info.ip")?,
            port: r.u16("axon_info.port")?,
            ip_type: r.u8("axon_info.ip_type")?,
            protocol: r.u8("axon_info.protocol")?,
            placeholder1: r.u8("axon_info.placeholder1")?,
            placeholder2: r.u8("axon_info.placeholder2")?,
        })
    }
}

/// `PrometheusInfo` of the subtensor pallet (fixed-width fields).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrometheusInfo {
    pub block: u64,
    pub version: u32,
    pub ip: u128,
    pub port: u16,
    pub ip_type: u8,
}

impl PrometheusInfo {
    fn decode(r: &mut ScaleReader) -> Result<Self> {
        Ok(Self {
            block: r.u64("prometheus_info.block")?,
            version: r.u32("prometheus_info.version")?,
            ip: r.u128("prometheus_info.ip")?,
            port: r.u16("prometheus_info.port")?,
            ip_type: r.u8("prometheus_info.ip_type")?,
        })
    }
}

/// `NeuronInfoLite<AccountId32>` as the runtime encodes it (field order of
/// `pallets/subtensor/src/rpc_info/neuron_info.rs`). Balances are in rao.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeuronInfoLite {
    pub hotkey: [u8; 32],
    pub coldkey: [u8; 32],
    pub uid: u16,
    pub netuid: u16,
    pub active: bool,
    pub axon_info: AxonInfo,
    pub prometheus_info: PrometheusInfo,
    /// `(coldkey, alpha stake)` pairs; bittensor sums them into `NeuronInfoLite.stake`.
    pub stake: Vec<([u8; 32], u64)>,
    pub rank: u16,
    pub emission: u64,
    pub incentive: u16,
    pub consensus: u16,
    pub trust: u16,
    pub validator_trust: u16,
    pub dividends: u16,
    pub last_update: u64,
    pub validator_permit: bool,
    pub pruning_score: u16,
}

impl NeuronInfoLite {
    /// Decodes one neuron at the reader's position.
    pub fn decode(r: &mut ScaleReader) -> Result<Self> {
        Ok(Self {
            hotkey: r.account("hotkey")?,
            coldkey: r.account("coldkey")?,
            uid: r.compact_u16("uid")?,
            netuid: r.compact_u16("netuid")?,
            active: r.bool("active")?,
            axon_info: AxonInfo::decode(r)?,
            prometheus_info: PrometheusInfo::decode(r)?,
            stake: r.vec("stake", 33, |r| {
                Ok((r.account("stake.coldkey")?, r.compact_u64("stake.amount")?))
            })?,
            rank: r.compact_u16("rank")?,
            emission: r.compact_u64("emission")?,
            incentive: r.compact_u16("incentive")?,
            consensus: r.compact_u16("consensus")?,
            trust: r.compact_u16("trust")?,
            validator_trust: r.compact_u16("validator_trust")?,
            dividends: r.compact_u16("dividends")?,
            last_update: r.compact_u64("last_update")?,
            validator_permit: r.bool("validator_permit")?,
            pruning_score: r.compact_u16("pruning_score")?,
        })
    }

    /// The lite info's stake: the sum of its `(coldkey, amount)` list, in rao.
    pub fn alpha_stake_rao(&self) -> u128 {
        self.stake.iter().map(|(_, a)| *a as u128).sum()
    }
}

/// Decodes the answer of `get_neurons_lite`: `Vec<NeuronInfoLite<AccountId32>>`, all bytes used.
pub fn decode_neurons_lite(bytes: &[u8]) -> Result<Vec<NeuronInfoLite>> {
    let mut r = ScaleReader::new(bytes);
    // Keys 64, uid/netuid/active 3, axon 34, prometheus 31, nine compacts, stake length and
    // permit 11: the smallest possible neuron.
    let n = r.vec_len("Vec<NeuronInfoLite> length", 143)?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let start = r.position();
        let neuron = NeuronInfoLite::decode(&mut r)
            .with_context(|| format!("neuron #{i} of {n} (starting at byte {start})"))?;
        out.push(neuron);
    }
    r.finish("the neuron list")?;
    Ok(out)
}

/// `SubnetState<AccountId32>` (`pallets/subtensor/src/rpc_info/show_subnet.rs`): per-uid vectors,
/// balances in rao.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubnetState {
    pub netuid: u16,
    pub hotkeys: Vec<[u8; 32]>,
    pub coldkeys: Vec<[u8; 32]>,
    pub active: Vec<bool>,
    pub validator_permit: Vec<bool>,
    pub pruning_score: Vec<u16>,
    pub last_update: Vec<u64>,
    pub emission: Vec<u64>,
    pub dividends: Vec<u16>,
    pub incentives: Vec<u16>,
    pub consensus: Vec<u16>,
    pub trust: Vec<u16>,
    pub rank: Vec<u16>,
    pub block_at_registration: Vec<u64>,
    pub alpha_stake: Vec<u64>,
    pub tao_stake: Vec<u64>,
    /// What bittensor's `metagraph.S` reports (alpha + root TAO × tao weight).
    pub total_stake: Vec<u64>,
    pub emission_history: Vec<Vec<u64>>,
}

/// Decodes the answer of `get_subnet_state`: `Option<SubnetState<AccountId32>>`.
pub fn decode_subnet_state(bytes: &[u8]) -> Result<Option<SubnetState>> {
    let mut r = ScaleReader::new(bytes);
    let at = r.position();
    let state = match r.u8("Option<SubnetState> tag")? {
        0 => None,
        1 => {
            let u16s = |r: &mut ScaleReader, what: &str| r.vec(what, 1, |r| r.compact_u16(what));
            let u64s = |r: &mut ScaleReader, what: &str| r.vec(what, 1, |r| r.compact_u64(what));
            let bools = |r: &mut ScaleReader, what: &str| r.vec(what, 1, |r| r.bool(what));
            let accounts = |r: &mut ScaleReader, what: &str| r.vec(what, 32, |r| r.account(what));
            Some(SubnetState {
                netuid: r.compact_u16("netuid")?,
                hotkeys: accounts(&mut r, "hotkeys")?,
                coldkeys: accounts(&mut r, "coldkeys")?,
                active: bools(&mut r, "active")?,
                validator_permit: bools(&mut r, "validator_permit")?,
                pruning_score: u16s(&mut r, "pruning_score")?,
                last_update: u64s(&mut r, "last_update")?,
                emission: u64s(&mut r, "emission")?,
                dividends: u16s(&mut r, "dividends")?,
                incentives: u16s(&mut r, "incentives")?,
                consensus: u16s(&mut r, "consensus")?,
                trust: u16s(&mut r, "trust")?,
                rank: u16s(&mut r, "rank")?,
                block_at_registration: u64s(&mut r, "block_at_registration")?,
                alpha_stake: u64s(&mut r, "alpha_stake")?,
                tao_stake: u64s(&mut r, "tao_stake")?,
                total_stake: u64s(&mut r, "total_stake")?,
                emission_history: r
                    .vec("emission_history", 1, |r| u64s(r, "emission_history item"))?,
            })
        }
        b => bail!("malformed SCALE payload: Option tag at byte {at} is {b:#04x}, not 0 or 1"),
    };
    r.finish("the subnet state")?;
    Ok(state)
}

// ---------------------------------------------------------------------------------------------
// JSON-RPC over HTTP

enum CallError {
    /// The node could not be reached or did not answer JSON-RPC.
    Transport(anyhow::Error),
    /// The node answered with a JSON-RPC error object.
    Rpc { code: i64, message: String },
}

impl CallError {
    fn into_anyhow(self, endpoint: &str, method: &str) -> anyhow::Error {
        match self {
            CallError::Transport(e) => e,
            CallError::Rpc { code, message } => anyhow!(
                "subtensor node {endpoint} answered {method} with RPC error {code}: {message}"
            ),
        }
    }
}

/// A blocking JSON-RPC client for one subtensor node.
pub struct RpcClient {
    agent: ureq::Agent,
    endpoint: String,
    url: String,
    next_id: Cell<u64>,
}

/// Largest answer accepted; a full subnet's neuron list is well under 1 MiB.
const MAX_RESPONSE_BYTES: u64 = 64 << 20;

impl RpcClient {
    /// A client for `endpoint` (URL or network name, see [`resolve_endpoint`]); each call gives
    /// up after `timeout`.
    pub fn new(endpoint: &str, timeout: Duration) -> Result<Self> {
        let url = resolve_endpoint(endpoint)?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Ok(Self {
            agent,
            endpoint: endpoint.trim().to_string(),
            url,
            next_id: Cell::new(1),
        })
    }

    /// The endpoint as given.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The HTTP URL posted to.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn shown(&self) -> String {
        if self.endpoint == self.url {
            self.endpoint.clone()
        } else {
            format!("{} (HTTP {})", self.endpoint, self.url)
        }
    }

    fn try_call(&self, method: &str, params: Value) -> Result<Value, CallError> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let shown = self.shown();
        let transport = |e: anyhow::Error| CallError::Transport(e);
        let mut resp = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes())
            .map_err(|e| {
                transport(anyhow!(
                    "cannot reach the subtensor node at {shown} for {method}: {e}; is the node \
                     running and serving RPC there (--endpoint)?"
                ))
            })?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_string()
            .map_err(|e| {
                transport(anyhow!(
                    "reading the answer of {shown} to {method} failed: {e}"
                ))
            })?;
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        if let Some(err) = parsed.as_ref().and_then(|v| v.get("error")) {
            return Err(CallError::Rpc {
                code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: err
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| err.to_string()),
            });
        }
        if !(200..300).contains(&status) {
            return Err(transport(anyhow!(
                "subtensor node {shown} answered {method} with HTTP {status}: {}",
                snippet(&text)
            )));
        }
        match parsed {
            Some(mut v) if v.get("result").is_some() => Ok(v["result"].take()),
            _ => Err(transport(anyhow!(
                "subtensor node {shown} answered {method} with something that is not a JSON-RPC \
                 result: {}",
                snippet(&text)
            ))),
        }
    }

    /// Calls `method` with `params` and returns its `result`; transport failures and RPC errors
    /// name the endpoint and the method.
    pub fn call(&self, method: &str, params: Value) -> Result<Value> {
        self.try_call(method, params)
            .map_err(|e| e.into_anyhow(&self.shown(), method))
    }

    /// Calls a runtime API function through `state_call` at `block_hash`, falling back to the
    /// node's custom RPC `legacy_method` (`[netuid, at]`) when the runtime call is refused.
    /// Returns the SCALE bytes.
    fn runtime_bytes(
        &self,
        runtime_fn: &str,
        legacy_method: &str,
        netuid: u16,
        block_hash: &str,
    ) -> Result<Vec<u8>> {
        let arg = format!("0x{}", hex::encode(netuid.to_le_bytes()));
        let shown = self.shown();
        let first = match self.try_call("state_call", json!([runtime_fn, arg, block_hash])) {
            Ok(v) => {
                return bytes_of(&v)
                    .with_context(|| format!("the answer of {shown} to state_call {runtime_fn}"))
            }
            Err(CallError::Transport(e)) => return Err(e),
            Err(CallError::Rpc { code, message }) => (code, message),
        };
        match self.try_call(legacy_method, json!([netuid, block_hash])) {
            Ok(v) => {
                bytes_of(&v).with_context(|| format!("the answer of {shown} to {legacy_method}"))
            }
            Err(CallError::Transport(e)) => Err(e),
            Err(CallError::Rpc { code, message }) => bail!(
                "subtensor node {shown} refused state_call {runtime_fn} (RPC error {}: {}) and \
                 {legacy_method} (RPC error {code}: {message}); is it a subtensor node with \
                 netuid {netuid}?",
                first.0,
                first.1
            ),
        }
    }
}

fn snippet(text: &str) -> String {
    let t = text.trim();
    if t.is_empty() {
        return "(empty body)".into();
    }
    let cut: String = t.chars().take(200).collect();
    if cut.len() < t.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

/// SCALE bytes from a JSON-RPC result: `state_call` gives a `0x` hex string, the custom RPC
/// methods a JSON array of bytes.
fn bytes_of(v: &Value) -> Result<Vec<u8>> {
    match v {
        Value::String(s) => {
            let h = s.strip_prefix("0x").unwrap_or(s);
            hex::decode(h).with_context(|| format!("{} is not hex", snippet(s)))
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, b)| {
                b.as_u64()
                    .and_then(|b| u8::try_from(b).ok())
                    .ok_or_else(|| anyhow!("item {i} of the byte array is {b}, not a byte"))
            })
            .collect(),
        other => bail!(
            "expected a hex string or a byte array, got {}",
            snippet(&other.to_string())
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Sync

/// Which stake the snapshot's `stake` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StakeSource {
    /// `SubnetState.total_stake`: bittensor's `metagraph.S`, which the subnet's blacklist and
    /// priority use.
    Total,
    /// The neuron's own alpha stake from `NeuronInfoLite` (one call fewer; not what `S` is).
    Alpha,
}

/// What [`fetch_snapshot`] asks for.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// URL or bittensor network name.
    pub endpoint: String,
    pub netuid: u16,
    pub stake: StakeSource,
    /// Per-request limit.
    pub timeout: Duration,
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            endpoint: FINNEY_ENDPOINT.into(),
            netuid: NATIX_NETUID,
            stake: StakeSource::Total,
            timeout: Duration::from_secs(60),
        }
    }
}

/// A metagraph snapshot as written to disk: `serve` reads its `neurons`; the rest says where and
/// when it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub netuid: u16,
    pub block: u64,
    pub block_hash: String,
    pub endpoint: String,
    pub stake_source: StakeSource,
    pub synced_at: DateTime<Utc>,
    /// Sorted by uid.
    pub neurons: Vec<Neuron>,
}

fn rao_to_tao(rao: u128) -> f64 {
    rao as f64 / RAO_PER_TAO
}

/// Joins the lite neurons with the subnet state's stake weights (`state` is needed for
/// [`StakeSource::Total`]) into serve's neurons, sorted by uid.
pub fn neurons_from_chain(
    lite: &[NeuronInfoLite],
    state: Option<&SubnetState>,
    stake: StakeSource,
) -> Result<Vec<Neuron>> {
    let mut out = Vec::with_capacity(lite.len());
    for n in lite {
        let hotkey = ss58_encode(&n.hotkey, SS58_FORMAT);
        let stake_rao = match stake {
            StakeSource::Alpha => n.alpha_stake_rao(),
            StakeSource::Total => {
                let s = state.context("the subnet state is needed for total stake")?;
                let i = n.uid as usize;
                match s.hotkeys.get(i) {
                    Some(h) if *h == n.hotkey => {}
                    Some(h) => bail!(
                        "the subnet state gives uid {} the hotkey {} but the neuron list gives {}; \
                         the two answers disagree (try again)",
                        n.uid,
                        ss58_encode(h, SS58_FORMAT),
                        hotkey
                    ),
                    None => bail!(
                        "the subnet state lists {} hotkeys but the neuron list has uid {}",
                        s.hotkeys.len(),
                        n.uid
                    ),
                }
                let total = s.total_stake.get(i).with_context(|| {
                    format!(
                        "the subnet state has {} total_stake entries but the neuron list has uid {}",
                        s.total_stake.len(),
                        n.uid
                    )
                })?;
                *total as u128
            }
        };
        out.push(Neuron {
            hotkey,
            uid: n.uid as u32,
            stake: rao_to_tao(stake_rao),
            validator_permit: n.validator_permit,
        });
    }
    out.sort_by_key(|n| n.uid);
    if let Some(w) = out.windows(2).find(|w| w[0].uid == w[1].uid) {
        bail!("the neuron list has uid {} twice", w[0].uid);
    }
    Ok(out)
}

fn parse_block_number(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => u64::from_str_radix(s.strip_prefix("0x").unwrap_or(s), 16).ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// Reads the subnet's neurons at the node's best block. `step` is told what is being fetched
/// (for a spinner).
pub fn fetch_snapshot(opts: &SyncOptions, mut step: impl FnMut(&str)) -> Result<Snapshot> {
    let client = RpcClient::new(&opts.endpoint, opts.timeout)?;
    let shown = client.shown();

    step("best block");
    // Both reads are pinned to one block so hotkeys and stakes agree.
    let hash = client.call("chain_getBlockHash", json!([]))?;
    let block_hash = hash
        .as_str()
        .filter(|h| h.starts_with("0x"))
        .with_context(|| format!("{shown} answered chain_getBlockHash with {hash}, not a hash"))?
        .to_string();
    let header = client.call("chain_getHeader", json!([block_hash]))?;
    let block = header
        .get("number")
        .and_then(parse_block_number)
        .with_context(|| {
            format!(
                "{shown} answered chain_getHeader without a block number: {}",
                snippet(&header.to_string())
            )
        })?;

    step("neurons");
    let bytes = client.runtime_bytes(
        "NeuronInfoRuntimeApi_get_neurons_lite",
        "neuronInfo_getNeuronsLite",
        opts.netuid,
        &block_hash,
    )?;
    let lite = decode_neurons_lite(&bytes).with_context(|| {
        format!(
            "cannot decode the neuron list (NeuronInfoLite) from {shown} for netuid {}",
            opts.netuid
        )
    })?;
    if lite.is_empty() {
        bail!(
            "{shown} has no neurons for netuid {} at block {block}; does the subnet exist on this \
             network?",
            opts.netuid
        );
    }
    if let Some(n) = lite.iter().find(|n| n.netuid != opts.netuid) {
        bail!(
            "{shown} answered for netuid {} with a neuron (uid {}) of netuid {}",
            opts.netuid,
            n.uid,
            n.netuid
        );
    }

    let state = match opts.stake {
        StakeSource::Alpha => None,
        StakeSource::Total => {
            step("stakes");
            let bytes = client.runtime_bytes(
                "SubnetInfoRuntimeApi_get_subnet_state",
                "subnetInfo_getSubnetState",
                opts.netuid,
                &block_hash,
            )?;
            let state = decode_subnet_state(&bytes).with_context(|| {
                format!(
                    "cannot decode the subnet state (SubnetState) from {shown} for netuid {}",
                    opts.netuid
                )
            })?;
            Some(state.with_context(|| {
                format!(
                    "{shown} has no subnet state for netuid {} at block {block} although it \
                     listed its neurons",
                    opts.netuid
                )
            })?)
        }
    };
    let neurons = neurons_from_chain(&lite, state.as_ref(), opts.stake)?;
    Ok(Snapshot {
        netuid: opts.netuid,
        block,
        block_hash,
        endpoint: client.endpoint().to_string(),
        stake_source: opts.stake,
        synced_at: Utc::now(),
        neurons,
    })
}

/// Writes `snapshot` to `path` atomically (the old file stays until the new one is complete).
pub fn write_snapshot(path: &Path, snapshot: &Snapshot) -> Result<()> {
    crate::util::fsx::write_json_atomic(path, snapshot)
        .with_context(|| format!("cannot write the metagraph snapshot {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_spec_vectors() {
        // Examples from the SCALE codec specification.
        let cases: &[(&[u8], u128)] = &[
            (&[0x00], 0),
            (&[0x04], 1),
            (&[0xa8], 42),
            (&[0xfc], 63),
            (&[0x01, 0x01], 64),
            (&[0x15, 0x01], 69),
            (&[0xfd, 0xff], 16383),
            (&[0x02, 0x00, 0x01, 0x00], 16384),
            (&[0xfe, 0xff, 0xff, 0xff], (1 << 30) - 1),
            (&[0x03, 0x00, 0x00, 0x00, 0x40], 1 << 30),
            (
                &[0x13, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                u64::MAX as u128,
            ),
        ];
        for (bytes, want) in cases {
            let mut r = ScaleReader::new(bytes);
            assert_eq!(r.compact("x").unwrap(), *want, "{bytes:02x?}");
            assert_eq!(r.remaining(), 0);
        }
        let e = ScaleReader::new(&[0x13, 0xff])
            .compact("stake")
            .unwrap_err();
        assert!(format!("{e}").contains("truncated") && format!("{e}").contains("stake"));
        let e = ScaleReader::new(&[0x02, 0x00, 0x04, 0x00])
            .compact_u16("uid")
            .unwrap_err();
        assert!(format!("{e}").contains("too large for a u16"), "{e}");
    }

    #[test]
    fn bools_and_vec_lengths_are_checked() {
        let e = ScaleReader::new(&[2]).bool("active").unwrap_err();
        assert!(format!("{e}").contains("not a bool"), "{e}");
        // 1000 items announced, 3 bytes left.
        let e = ScaleReader::new(&[0xa1, 0x0f, 1, 2, 3])
            .vec_len("stake", 1)
            .unwrap_err();
        assert!(format!("{e}").contains("announces 1000"), "{e}");
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            resolve_endpoint("ws://127.0.0.1:9944").unwrap(),
            "http://127.0.0.1:9944"
        );
        assert_eq!(
            resolve_endpoint("finney").unwrap(),
            "https://entrypoint-finney.opentensor.ai:443"
        );
        assert_eq!(
            resolve_endpoint("WSS://Node.example:443/rpc").unwrap(),
            "https://Node.example:443/rpc"
        );
        assert_eq!(resolve_endpoint("http://a:1").unwrap(), "http://a:1");
        assert!(resolve_endpoint("tcp://a:1").is_err());
        assert!(resolve_endpoint("ws://").is_err());
    }

    #[test]
    fn bytes_from_results() {
        assert_eq!(bytes_of(&json!("0x0102ff")).unwrap(), vec![1, 2, 255]);
        assert_eq!(bytes_of(&json!([1, 2, 255])).unwrap(), vec![1, 2, 255]);
        assert!(bytes_of(&json!([1, 256])).is_err());
        assert!(bytes_of(&json!("0xzz")).is_err());
        assert!(bytes_of(&json!(null)).is_err());
    }
}
