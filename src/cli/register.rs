//! `sv72 register`: registers the miner and its model with NATIX (replaces `register.sh`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use zeroize::Zeroizing;

use super::args::WalletArgs;
use super::Ctx;
use crate::cycle::exit;
use crate::cycle::register::{check_card_submitter, register, Outcome, Registration};
use crate::keys::{hotkey_file_path, load_wallet_signing_key, prompt_password};

/// Flags of `sv72 register`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The miner's UID on subnet 72 (default: register.uid).
    #[arg(long, value_name = "N")]
    pub uid: Option<u16>,
    /// Hugging Face repository of the submission, ORG/NAME (default: register.model_repo).
    #[arg(long, value_name = "ORG/NAME")]
    pub model_repo: Option<String>,
    /// The signing hotkey's wallet.
    #[command(flatten)]
    pub wallet: WalletArgs,
    /// Base URL of the registration service (default: register.endpoint).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// First check that the deployed model card's submitted_by is the signing hotkey.
    #[arg(long)]
    pub check_card: bool,
    /// Model card checked by --check-card (default: cycle.model_card).
    #[arg(long, value_name = "FILE", requires = "check_card")]
    pub card: Option<PathBuf>,
}

/// Runs `sv72 register`.
pub fn run(args: Args, ctx: &Ctx) -> Result<ExitCode> {
    let cfg = &ctx.config.register;
    let uid = args
        .uid
        .or(cfg.uid)
        .context("no miner UID: pass --uid N or set register.uid")?;
    let model_repo = args
        .model_repo
        .clone()
        .or_else(|| cfg.model_repo.clone())
        .context("no model repository: pass --model-repo ORG/NAME or set register.model_repo")?;
    crate::export::push::check_repo_id(&model_repo).context("--model-repo")?;
    if cfg.poll_interval_s == 0 {
        bail!("register.poll_interval_s must be at least 1");
    }
    let (wallets, wallet, hotkey) = args.wallet.resolve(&ctx.config);
    let file = hotkey_file_path(&wallets, &wallet, &hotkey);
    let env_name = cfg.password_env.clone();
    let mut password = || -> Result<Zeroizing<String>> {
        if !env_name.is_empty() {
            if let Some(v) = std::env::var_os(&env_name) {
                let v = Zeroizing::new(v.to_string_lossy().into_owned());
                // bittensor-wallet trims the password it encrypts with.
                return Ok(Zeroizing::new(v.trim().to_string()));
            }
        }
        match prompt_password(&format!("Password of hotkey file {}: ", file.display()))? {
            Some(p) => Ok(p),
            None => bail!(
                "{} is encrypted and there is no terminal to ask for its password: set the \
                 environment variable {env_name} (register.password_env)",
                file.display()
            ),
        }
    };
    let key = load_wallet_signing_key(&wallets, &wallet, &hotkey, &mut password)?;
    if args.check_card {
        let card = args
            .card
            .clone()
            .unwrap_or_else(|| ctx.config.cycle.model_card.clone());
        check_card_submitter(&card, &key.ss58())?;
        eprintln!("model card {} is submitted by this hotkey", card.display());
    }
    let reg = Registration {
        endpoint: args
            .endpoint
            .clone()
            .unwrap_or_else(|| cfg.endpoint.clone()),
        uid,
        model_repo,
        poll_interval: Duration::from_secs(cfg.poll_interval_s),
        timeout: Duration::from_secs(cfg.timeout_s),
    };
    let outcome = register(&reg, &key, &mut |line| eprintln!("{line}"))?;
    match outcome {
        Outcome::Succeeded(payload) => {
            eprintln!("registration succeeded for UID {uid}");
            println!("{}", serde_json::to_string_pretty(&payload)?);
            Ok(ExitCode::from(exit::OK))
        }
        Outcome::Rejected { reason, payload } => {
            eprintln!("registration failed for UID {uid}: {reason}");
            println!("{}", serde_json::to_string_pretty(&payload)?);
            Ok(ExitCode::from(exit::REGISTER_REJECTED))
        }
        Outcome::TimedOut { last_status } => {
            eprintln!(
                "timed out after {}s waiting for the registration of UID {uid} (last status: \
                 {last_status}); raise register.timeout_s or check the status later",
                cfg.timeout_s
            );
            Ok(ExitCode::from(exit::REGISTER_TIMEOUT))
        }
    }
}
