//! What a subnet pays, read from a subtensor node at one block: its pool and emission
//! (`DynamicInfo`), its registration cost (`SubnetInfov2.burn`), the pool's swap price and every
//! UID's incentive and emission (`NeuronInfoLite`). `sv72 econ` builds on this.
//!
//! The sources are the ones bittensor 10.2 reads, chosen for robustness:
//!
//! * `SwapRuntimeApi_current_alpha_price(netuid) -> u64` (rao of TAO per alpha) is what
//!   `subtensor.get_subnet_price` reads. Since the swap pallet moved to a weighted (balancer)
//!   pool, the reserve ratio `tao_in / alpha_in` is no longer the price; recomputing it would mean
//!   reading the pool weights and copying the pallet's maths. A bare `u64` cannot change layout.
//!   Runtimes without the API (before the swap pallet) priced alpha at the reserve ratio, which is
//!   also bittensor's fallback, so that is used there and the report says so.
//! * `SubnetInfoRuntimeApi_get_dynamic_info` is what `subtensor.subnet()` decodes: reserves,
//!   tempo, per-block emission and the moving price in one frozen struct (`freeze_struct`), read
//!   to the last byte so a new layout is an error rather than shifted numbers.
//! * `SubnetInfoRuntimeApi_get_subnet_info_v2` (bittensor's `get_subnet_info`) carries `burn`,
//!   the runtime's own reading of the `Burn` storage item (so no storage-default guessing), with
//!   the immunity period and UID counts.
//! * `NeuronInfoRuntimeApi_get_neurons_lite`, as for the metagraph: per-UID `Emission` (alpha per
//!   epoch), `Incentive` and `Dividends`. Its `rank` is deprecated (always 0), so ranks are
//!   computed from emission by the caller.
//!
//! The whole `Metagraph` runtime struct would carry all of this in one call, but it has changed
//! layout many times and nests identity structs; four small calls pinned to one block hash agree
//! with each other just as well.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::rpc::RpcClient;
use super::scale::{
    decode_dynamic_info, decode_neurons_lite, decode_subnet_info, decode_u64, DynamicInfo,
    NeuronInfoLite, SubnetInfo,
};

/// What [`read_subnet`] asks for.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// URL or bittensor network name.
    pub endpoint: String,
    pub netuid: u16,
    /// Per-request limit.
    pub timeout: Duration,
}

/// The node's answers as read, SCALE bytes in `0x` hex: what `sv72 econ --snapshot` keeps so a
/// report can be re-made offline and re-decoded by a later sv72.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSubnetRead {
    pub netuid: u16,
    pub block: u64,
    pub block_hash: String,
    /// The endpoint as given.
    pub endpoint: String,
    pub read_at: DateTime<Utc>,
    /// `SubnetInfoRuntimeApi_get_dynamic_info`.
    pub dynamic_info: String,
    /// `SubnetInfoRuntimeApi_get_subnet_info_v2`.
    pub subnet_info: String,
    /// `SwapRuntimeApi_current_alpha_price`; `null` when the runtime has none.
    pub alpha_price: Option<String>,
    /// Why there is no swap price (the node's refusal).
    pub no_swap_price: Option<String>,
    /// `NeuronInfoRuntimeApi_get_neurons_lite`.
    pub neurons_lite: String,
}

/// One subnet's economics as the chain held them at `block`.
#[derive(Debug, Clone)]
pub struct SubnetRead {
    pub netuid: u16,
    pub block: u64,
    pub block_hash: String,
    /// The endpoint as given.
    pub endpoint: String,
    pub read_at: DateTime<Utc>,
    pub dynamic: DynamicInfo,
    pub info: SubnetInfo,
    /// `SwapRuntimeApi_current_alpha_price` in rao of TAO per alpha; `None` when the runtime has
    /// no swap API (then [`SubnetRead::no_swap_price`] says why).
    pub swap_price_rao: Option<u64>,
    pub no_swap_price: Option<String>,
    pub neurons: Vec<NeuronInfoLite>,
}

/// True for a node's answer that the runtime does not export a function (as opposed to a
/// failure while running it, which must not be papered over with a fallback).
fn not_exported(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("not found") || m.contains("does not exist") || m.contains("not exported")
}

fn hex0x(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

/// Reads the subnet's pool, emission, registration cost, price and neurons at the node's best
/// block, all pinned to its hash, and decodes them. `step` is told what is being fetched (for a
/// spinner).
pub fn read_subnet(
    opts: &ReadOptions,
    step: impl FnMut(&str),
) -> Result<(RawSubnetRead, SubnetRead)> {
    let raw = fetch_raw(opts, step)?;
    let read = raw.decode(&raw.endpoint)?;
    Ok((raw, read))
}

/// The node's answers, undecoded.
pub fn fetch_raw(opts: &ReadOptions, mut step: impl FnMut(&str)) -> Result<RawSubnetRead> {
    let client = RpcClient::new(&opts.endpoint, opts.timeout)?;
    let shown = client.shown();
    let netuid = opts.netuid;

    step("best block");
    let (block, block_hash) = client.best_block()?;
    let read_at = Utc::now();

    step("pool and emission");
    let dynamic_info = client.runtime_bytes(
        "SubnetInfoRuntimeApi_get_dynamic_info",
        "subnetInfo_getDynamicInfo",
        netuid,
        &block_hash,
    )?;

    step("registration cost");
    let subnet_info = client.runtime_bytes(
        "SubnetInfoRuntimeApi_get_subnet_info_v2",
        "subnetInfo_getSubnetInfo_v2",
        netuid,
        &block_hash,
    )?;

    step("alpha price");
    let price_fn = "SwapRuntimeApi_current_alpha_price";
    let (alpha_price, no_swap_price) =
        match client.state_call(price_fn, &netuid.to_le_bytes(), &block_hash)? {
            Ok(bytes) => (Some(hex0x(&bytes)), None),
            Err(refusal) if not_exported(&refusal.message) => (
                None,
                Some(format!("the node's runtime has no {price_fn} ({refusal})")),
            ),
            Err(refusal) => {
                bail!("subtensor node {shown} refused state_call {price_fn}: {refusal}")
            }
        };

    step("neurons");
    let neurons_lite = client.runtime_bytes(
        "NeuronInfoRuntimeApi_get_neurons_lite",
        "neuronInfo_getNeuronsLite",
        netuid,
        &block_hash,
    )?;
    Ok(RawSubnetRead {
        netuid,
        block,
        block_hash,
        endpoint: client.endpoint().to_string(),
        read_at,
        dynamic_info: hex0x(&dynamic_info),
        subnet_info: hex0x(&subnet_info),
        alpha_price,
        no_swap_price,
        neurons_lite: hex0x(&neurons_lite),
    })
}

fn unhex(field: &str, text: &str, source: &str) -> Result<Vec<u8>> {
    hex::decode(text.trim().trim_start_matches("0x"))
        .with_context(|| format!("{source}: `{field}` is not 0x-prefixed hex"))
}

impl RawSubnetRead {
    /// Decodes the answers; `source` (the node or the snapshot file) is named in errors.
    pub fn decode(&self, source: &str) -> Result<SubnetRead> {
        let netuid = self.netuid;
        let block = self.block;
        let missing = |what: &str| {
            format!(
                "{source} has no {what} for netuid {netuid} at block {block}; does the subnet \
                 exist on this network?"
            )
        };
        let dynamic = decode_dynamic_info(&unhex("dynamic_info", &self.dynamic_info, source)?)
            .with_context(|| format!("cannot decode the dynamic info (DynamicInfo) from {source}"))?
            .with_context(|| missing("dynamic info"))?;
        let info = decode_subnet_info(&unhex("subnet_info", &self.subnet_info, source)?)
            .with_context(|| format!("cannot decode the subnet info (SubnetInfov2) from {source}"))?
            .with_context(|| missing("subnet info"))?;
        let swap_price_rao = match &self.alpha_price {
            Some(h) => Some(
                decode_u64(&unhex("alpha_price", h, source)?, "the alpha price (u64)")
                    .with_context(|| {
                        format!("the answer of {source} to SwapRuntimeApi_current_alpha_price")
                    })?,
            ),
            None => None,
        };
        if swap_price_rao.is_none() && self.no_swap_price.is_none() {
            bail!("{source}: `alpha_price` is null and `no_swap_price` does not say why");
        }
        let neurons = decode_neurons_lite(&unhex("neurons_lite", &self.neurons_lite, source)?)
            .with_context(|| {
                format!(
                    "cannot decode the neuron list (NeuronInfoLite) from {source} for netuid \
                     {netuid}"
                )
            })?;
        if neurons.is_empty() {
            bail!("{}", missing("neurons"));
        }
        for (what, got) in [
            ("dynamic info", dynamic.netuid),
            ("subnet info", info.netuid),
        ]
        .into_iter()
        .chain(neurons.iter().map(|n| ("neuron list", n.netuid)))
        {
            if got != netuid {
                bail!("{source} answered for netuid {netuid} with the {what} of netuid {got}");
            }
        }
        Ok(SubnetRead {
            netuid,
            block,
            block_hash: self.block_hash.clone(),
            endpoint: self.endpoint.clone(),
            read_at: self.read_at,
            dynamic,
            info,
            swap_price_rao,
            no_swap_price: self.no_swap_price.clone(),
            neurons,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_missing_functions_fall_back() {
        assert!(not_exported(
            "Client error: Execution failed: Other: Exported method \
             SwapRuntimeApi_current_alpha_price is not found"
        ));
        assert!(not_exported("Exported method not found"));
        assert!(!not_exported("Execution failed: wasm trap: unreachable"));
    }
}
