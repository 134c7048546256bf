//! `sv72 metagraph sync`: fetch the subnet's neurons from a subtensor node into the snapshot file
//! `sv72 serve` reads.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};

use super::Ctx;
use crate::chain::rpc::FINNEY_ENDPOINT;
use crate::chain::sync::NATIX_NETUID;
use crate::chain::{fetch_snapshot, write_snapshot, StakeSource, SyncOptions};

/// Flags of `sv72 metagraph`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: MetagraphCommand,
}

/// What `sv72 metagraph` does.
#[derive(Debug, clap::Subcommand)]
pub enum MetagraphCommand {
    /// Read the subnet's neurons (hotkey, uid, stake, validator permit) from a subtensor node's
    /// JSON-RPC and write the snapshot serve uses.
    Sync(SyncArgs),
}

/// Flags of `sv72 metagraph sync`.
#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// Subtensor node: ws://, wss://, http:// or https:// URL (ws is spoken as HTTP JSON-RPC on
    /// the same port), or a network name: finney, test, archive, local.
    #[arg(long, env = "SV72_SUBTENSOR", value_name = "URL", default_value = FINNEY_ENDPOINT)]
    pub endpoint: String,
    /// Subnet.
    #[arg(long, default_value_t = NATIX_NETUID)]
    pub netuid: u16,
    /// Snapshot file to write (default: serve.metagraph).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Stake to record: `total` is bittensor's metagraph.S (what the subnet's blacklist uses).
    #[arg(long, value_enum, default_value_t = StakeSource::Total)]
    pub stake: StakeSource,
    /// Seconds one RPC request may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub timeout_s: u64,
}

/// Runs `sv72 metagraph ...`.
pub fn run(args: Args, ctx: &Ctx) -> Result<ExitCode> {
    match args.command {
        MetagraphCommand::Sync(a) => sync(a, ctx),
    }
}

fn sync(args: SyncArgs, ctx: &Ctx) -> Result<ExitCode> {
    if args.timeout_s == 0 {
        bail!("--timeout-s must be at least 1");
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| ctx.config.serve.metagraph.clone());
    let opts = SyncOptions {
        endpoint: args.endpoint.clone(),
        netuid: args.netuid,
        stake: args.stake,
        timeout: Duration::from_secs(args.timeout_s),
    };
    let spinner = crate::util::progress::spinner("metagraph sync");
    spinner.enable_steady_tick(Duration::from_millis(120));
    let snapshot = fetch_snapshot(&opts, |step| {
        spinner.set_message(format!("metagraph sync: {step}"));
        spinner.inc(1);
    });
    spinner.finish_and_clear();
    // On any failure the old snapshot stays untouched: nothing is written before this point.
    let snapshot = snapshot?;
    write_snapshot(&out, &snapshot)?;
    let permits = snapshot
        .neurons
        .iter()
        .filter(|n| n.validator_permit)
        .count();
    let min_stake = ctx.config.serve.min_stake;
    let admitted = snapshot
        .neurons
        .iter()
        .filter(|n| n.validator_permit && n.stake >= min_stake)
        .count();
    eprintln!(
        "sv72 metagraph sync: netuid {} at block {} from {}: {} neurons, {} with a validator \
         permit, {} of them with stake >= serve.min_stake {}; wrote {}",
        snapshot.netuid,
        snapshot.block,
        snapshot.endpoint,
        snapshot.neurons.len(),
        permits,
        admitted,
        min_stake,
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}
