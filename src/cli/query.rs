//! `sv72 query`: one signed `ImageSynapse` request to an axon, as a validator's dendrite sends
//! it; prints the prediction. For demos and smoke tests of a running `sv72 serve`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};

use super::args::WalletPathArg;
use super::Ctx;
use crate::serve::dendrite::{query, query_key, QueryRequest};

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
    #[command(flatten)]
    pub wallet: WalletPathArg,
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

/// Runs `sv72 query`.
pub fn run(args: Args, ctx: &Ctx) -> Result<ExitCode> {
    let key = query_key(args.hotkey_seed.as_deref())?;
    if args.print_hotkey {
        println!("{}", key.ss58());
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(axon), Some(image)) = (args.axon, args.image) else {
        bail!("give --axon HOST:PORT and --image FILE");
    };
    let axon_hotkey =
        args.wallet
            .axon_hotkey(args.axon_hotkey.as_deref(), "--axon-hotkey", &ctx.config)?;
    let req = QueryRequest {
        axon,
        axon_hotkey,
        image,
        timeout: args.timeout,
        wait: args.wait,
    };
    let (p, ans) = query(&req, &key)?;
    println!("{p}");
    eprintln!(
        "{}: {} ({})",
        req.image.display(),
        if p > 0.5 { "roadwork" } else { "none" },
        ans.message
    );
    Ok(ExitCode::SUCCESS)
}
