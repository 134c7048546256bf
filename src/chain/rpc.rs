//! Blocking JSON-RPC over HTTP to one subtensor node.
//!
//! Only HTTP JSON-RPC is spoken: substrate nodes serve it on the websocket port, so `ws://` and
//! `wss://` endpoints are mapped to `http://` and `https://`.

use std::cell::Cell;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

/// Bittensor's main network entry point (`bittensor.core.settings.FINNEY_ENTRYPOINT`).
pub const FINNEY_ENDPOINT: &str = "wss://entrypoint-finney.opentensor.ai:443";
/// Bittensor's test network entry point.
pub const TEST_ENDPOINT: &str = "wss://test.finney.opentensor.ai:443";
/// Bittensor's archive node entry point.
pub const ARCHIVE_ENDPOINT: &str = "wss://archive.chain.opentensor.ai:443";
/// A local subtensor node.
pub const LOCAL_ENDPOINT: &str = "ws://127.0.0.1:9944";

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

    /// The endpoint for messages: as given, plus the HTTP URL when it differs.
    pub fn shown(&self) -> String {
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

    /// The node's best block: its number and hash. Reads that must agree are pinned to it.
    pub fn best_block(&self) -> Result<(u64, String)> {
        let shown = self.shown();
        let hash = self.call("chain_getBlockHash", json!([]))?;
        let block_hash = hash
            .as_str()
            .filter(|h| h.starts_with("0x"))
            .with_context(|| {
                format!("{shown} answered chain_getBlockHash with {hash}, not a hash")
            })?
            .to_string();
        let header = self.call("chain_getHeader", json!([block_hash]))?;
        let block = header
            .get("number")
            .and_then(parse_block_number)
            .with_context(|| {
                format!(
                    "{shown} answered chain_getHeader without a block number: {}",
                    snippet(&header.to_string())
                )
            })?;
        Ok((block, block_hash))
    }

    /// Calls runtime API function `runtime_fn` (e.g. `SwapRuntimeApi_current_alpha_price`) with
    /// SCALE-encoded `args` through `state_call` at `block_hash`. The inner `Err` is the node's
    /// refusal (an RPC error, e.g. a runtime without that API); the outer one a transport failure
    /// or an answer that is not SCALE bytes.
    pub fn state_call(
        &self,
        runtime_fn: &str,
        args: &[u8],
        block_hash: &str,
    ) -> Result<Result<Vec<u8>, Refusal>> {
        let arg = format!("0x{}", hex::encode(args));
        match self.try_call("state_call", json!([runtime_fn, arg, block_hash])) {
            Ok(v) => bytes_of(&v).map(Ok).with_context(|| {
                format!("the answer of {} to state_call {runtime_fn}", self.shown())
            }),
            Err(CallError::Transport(e)) => Err(e),
            Err(CallError::Rpc { code, message }) => Ok(Err(Refusal { code, message })),
        }
    }

    /// Calls a runtime API function through `state_call` at `block_hash`, falling back to the
    /// node's custom RPC `legacy_method` (`[netuid, at]`) when the runtime call is refused.
    /// Returns the SCALE bytes.
    pub fn runtime_bytes(
        &self,
        runtime_fn: &str,
        legacy_method: &str,
        netuid: u16,
        block_hash: &str,
    ) -> Result<Vec<u8>> {
        let shown = self.shown();
        let first = match self.state_call(runtime_fn, &netuid.to_le_bytes(), block_hash)? {
            Ok(bytes) => return Ok(bytes),
            Err(refusal) => refusal,
        };
        match self.try_call(legacy_method, json!([netuid, block_hash])) {
            Ok(v) => {
                bytes_of(&v).with_context(|| format!("the answer of {shown} to {legacy_method}"))
            }
            Err(CallError::Transport(e)) => Err(e),
            Err(CallError::Rpc { code, message }) => bail!(
                "subtensor node {shown} refused state_call {runtime_fn} ({first}) and \
                 {legacy_method} (RPC error {code}: {message}); is it a subtensor node with \
                 netuid {netuid}?"
            ),
        }
    }
}

/// A node's RPC error answer to a call (e.g. a runtime that lacks the API called).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: i64,
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RPC error {}: {}", self.code, self.message)
    }
}

/// A block number as `chain_getHeader` gives it (`0x` hex string) or as a plain number.
fn parse_block_number(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => u64::from_str_radix(s.strip_prefix("0x").unwrap_or(s), 16).ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

pub(crate) fn snippet(text: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
