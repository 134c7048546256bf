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

/// One subnet's economics as the chain held them at `block`.
#[derive(Debug, Clone)]
pub struct SubnetRead {
    pub netuid: u16,
    pub block: u64,
    pub block_hash: String,
    /// The endpoint as given.
    pub endpoint: String,
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

/// Reads the subnet's pool, emission, registration cost, price and neurons at the node's best
/// block. `step` is told what is being fetched (for a spinner).
pub fn read_subnet(opts: &ReadOptions, mut step: impl FnMut(&str)) -> Result<SubnetRead> {
    let client = RpcClient::new(&opts.endpoint, opts.timeout)?;
    let shown = client.shown();
    let netuid = opts.netuid;

    step("best block");
    let (block, block_hash) = client.best_block()?;
    let missing = |what: &str| {
        format!(
            "{shown} has no {what} for netuid {netuid} at block {block}; does the subnet exist \
             on this network?"
        )
    };

    step("pool and emission");
    let bytes = client.runtime_bytes(
        "SubnetInfoRuntimeApi_get_dynamic_info",
        "subnetInfo_getDynamicInfo",
        netuid,
        &block_hash,
    )?;
    let dynamic = decode_dynamic_info(&bytes)
        .with_context(|| format!("cannot decode the dynamic info (DynamicInfo) from {shown}"))?
        .with_context(|| missing("dynamic info"))?;

    step("registration cost");
    let bytes = client.runtime_bytes(
        "SubnetInfoRuntimeApi_get_subnet_info_v2",
        "subnetInfo_getSubnetInfo_v2",
        netuid,
        &block_hash,
    )?;
    let info = decode_subnet_info(&bytes)
        .with_context(|| format!("cannot decode the subnet info (SubnetInfov2) from {shown}"))?
        .with_context(|| missing("subnet info"))?;

    step("alpha price");
    let price_fn = "SwapRuntimeApi_current_alpha_price";
    let (swap_price_rao, no_swap_price) =
        match client.state_call(price_fn, &netuid.to_le_bytes(), &block_hash)? {
            Ok(bytes) => {
                let p = decode_u64(&bytes, "the alpha price (u64)")
                    .with_context(|| format!("the answer of {shown} to state_call {price_fn}"))?;
                (Some(p), None)
            }
            Err(refusal) if not_exported(&refusal.message) => (
                None,
                Some(format!("the node's runtime has no {price_fn} ({refusal})")),
            ),
            Err(refusal) => bail!("subtensor node {shown} refused state_call {price_fn}: {refusal}"),
        };

    step("neurons");
    let bytes = client.runtime_bytes(
        "NeuronInfoRuntimeApi_get_neurons_lite",
        "neuronInfo_getNeuronsLite",
        netuid,
        &block_hash,
    )?;
    let neurons = decode_neurons_lite(&bytes).with_context(|| {
        format!("cannot decode the neuron list (NeuronInfoLite) from {shown} for netuid {netuid}")
    })?;
    if neurons.is_empty() {
        bail!("{}", missing("neurons"));
    }
    for (what, got) in [("dynamic info", dynamic.netuid), ("subnet info", info.netuid)]
        .into_iter()
        .chain(neurons.iter().map(|n| ("neuron list", n.netuid)))
    {
        if got != netuid {
            bail!("{shown} answered for netuid {netuid} with the {what} of netuid {got}");
        }
    }
    Ok(SubnetRead {
        netuid,
        block,
        block_hash,
        endpoint: client.endpoint().to_string(),
        dynamic,
        info,
        swap_price_rao,
        no_swap_price,
        neurons,
    })
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
