//! `sv72 metagraph sync`: the subnet's neurons at one block, joined into the snapshot
//! `sv72 serve` loads.
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

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::metagraph::Neuron;
use super::rpc::{RpcClient, FINNEY_ENDPOINT};
use super::scale::{decode_neurons_lite, decode_subnet_state, NeuronInfoLite, SubnetState};
use crate::keys::{ss58_encode, SS58_FORMAT};

/// NATIX StreetVision's subnet.
pub const NATIX_NETUID: u16 = 72;
/// Rao per TAO (and per alpha).
pub const RAO_PER_TAO: f64 = 1e9;

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

/// Reads the subnet's neurons at the node's best block. `step` is told what is being fetched
/// (for a spinner).
pub fn fetch_snapshot(opts: &SyncOptions, mut step: impl FnMut(&str)) -> Result<Snapshot> {
    let client = RpcClient::new(&opts.endpoint, opts.timeout)?;
    let shown = client.shown();

    step("best block");
    // Both reads are pinned to one block so hotkeys and stakes agree.
    let (block, block_hash) = client.best_block()?;

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
