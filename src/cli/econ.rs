//! `sv72 econ`: what mining the subnet earns by rank, from the chain, against your costs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};

use super::Ctx;
use crate::chain::ReadOptions;
use crate::econ::{self, EconOptions, Source, Target};

/// Flags of `sv72 econ`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Subnet (default: econ.netuid).
    #[arg(long)]
    pub netuid: Option<u16>,
    /// Subtensor node: ws://, wss://, http:// or https:// URL, or finney, test, archive, local
    /// (default: $SV72_SUBTENSOR, else econ.endpoint).
    #[arg(long, alias = "endpoint", env = "SV72_SUBTENSOR", value_name = "URL")]
    pub node: Option<String>,
    /// TAO price in USD (beats econ.tao_usd, econ.price_url and a snapshot's price).
    #[arg(long, value_name = "USD")]
    pub tao_usd: Option<f64>,
    /// Also report this UID.
    #[arg(long, conflicts_with = "hotkey")]
    pub uid: Option<u16>,
    /// Also report this hotkey (SS58).
    #[arg(long, value_name = "SS58")]
    pub hotkey: Option<String>,
    /// Save what was read (the node's answers and the TAO price) to FILE.
    #[arg(long, value_name = "FILE")]
    pub snapshot: Option<PathBuf>,
    /// Re-make the report from a saved snapshot instead of asking a node (--node is ignored).
    #[arg(long, value_name = "FILE")]
    pub from_snapshot: Option<PathBuf>,
    /// Folder for report.md, report.json and revenue_by_rank.png (default: econ.out_dir).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print report.json to stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Seconds one request (RPC or price endpoint) may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub timeout_s: u64,
}

/// Runs `sv72 econ`.
pub fn run(args: Args, ctx: &Ctx) -> Result<ExitCode> {
    if args.timeout_s == 0 {
        bail!("--timeout-s must be at least 1");
    }
    let cfg = &ctx.config.econ;
    let timeout = Duration::from_secs(args.timeout_s);
    let source = match args.from_snapshot {
        Some(p) => Source::Snapshot(p),
        None => Source::Node(ReadOptions {
            endpoint: args.node.unwrap_or_else(|| cfg.endpoint.clone()),
            netuid: args.netuid.unwrap_or(cfg.netuid),
            timeout,
        }),
    };
    let target = match (args.uid, args.hotkey) {
        (Some(u), _) => Some(Target::Uid(u)),
        (None, Some(h)) => Some(Target::Hotkey(h)),
        (None, None) => None,
    };
    let out = args.out.unwrap_or_else(|| cfg.out_dir.clone());
    let opts = EconOptions {
        source,
        tao_usd: args.tao_usd,
        target,
        save_snapshot: args.snapshot,
        out_dir: Some(out.clone()),
        timeout,
    };
    let spinner = crate::util::progress::spinner("econ");
    spinner.enable_steady_tick(Duration::from_millis(120));
    let report = econ::run(&opts, cfg, |step| {
        spinner.set_message(format!("econ: {step}"));
        spinner.inc(1);
    });
    spinner.finish_and_clear();
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.verdict);
        for t in &report.tiers {
            println!(
                "  top {:>2}% (rank {:>3}): {:>9.3} alpha/day  ${:>9.2}/day  net ${:>9.2}/day",
                t.top_percent,
                t.earner.rank.unwrap_or(0),
                t.earner.alpha_day,
                t.earner.usd_day,
                t.earner.net_usd_day
            );
        }
    }
    eprintln!(
        "sv72 econ: netuid {} at block {}; wrote {}/report.md, report.json, {}",
        report.netuid,
        report.block,
        out.display(),
        econ::report::PLOT
    );
    Ok(ExitCode::SUCCESS)
}
