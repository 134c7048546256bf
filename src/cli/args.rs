//! Argument groups several subcommands share (`#[command(flatten)]`).

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::config::{Config, Device};
use crate::keys::{default_wallet_path, read_wallet_hotkey, ss58_decode};

/// `--device`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DeviceArg {
    /// `cpu` or `cuda` for the backbone (default: `backbone.device`).
    #[arg(long, value_enum)]
    pub device: Option<Device>,
}

impl DeviceArg {
    /// The device given, else `backbone.device`.
    pub fn or_config(&self, cfg: &Config) -> Device {
        self.device.unwrap_or(cfg.backbone.device)
    }

    /// Writes the device given into `cfg.backbone.device`.
    pub fn apply(&self, cfg: &mut Config) {
        cfg.backbone.device = self.or_config(cfg);
    }
}

/// A bittensor wallet: `--wallet`, `--wallet-hotkey`, `--wallets-path`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WalletArgs {
    /// Bittensor wallet name (`register` defaults to serve.wallet_name; `export` checks
    /// --hotkey against its hotkey only when it is given).
    #[arg(long, value_name = "NAME")]
    pub wallet: Option<String>,
    /// Hotkey name inside the wallet (default: serve.wallet_hotkey).
    #[arg(long, value_name = "NAME")]
    pub wallet_hotkey: Option<String>,
    /// Bittensor wallets folder (default: ~/.bittensor/wallets).
    #[arg(long, value_name = "DIR")]
    pub wallets_path: Option<PathBuf>,
}

impl WalletArgs {
    /// `(wallets folder, wallet name, hotkey name)`, defaults from the config.
    pub fn resolve(&self, cfg: &Config) -> (PathBuf, String, String) {
        (
            self.wallets_path
                .clone()
                .unwrap_or_else(default_wallet_path),
            self.wallet
                .clone()
                .unwrap_or_else(|| cfg.serve.wallet_name.clone()),
            self.wallet_hotkey
                .clone()
                .unwrap_or_else(|| cfg.serve.wallet_hotkey.clone()),
        )
    }
}

/// `--wallet-path`: where the axon's own wallet (serve.wallet_name/serve.wallet_hotkey) is.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WalletPathArg {
    /// Bittensor wallets folder (default: ~/.bittensor/wallets).
    #[arg(long, value_name = "DIR")]
    pub wallet_path: Option<PathBuf>,
}

impl WalletPathArg {
    /// The axon hotkey: `given` (checked as SS58; `flag` names it in errors), else the public
    /// key of the local wallet serve.wallet_name/serve.wallet_hotkey.
    pub fn axon_hotkey(&self, given: Option<&str>, flag: &str, cfg: &Config) -> Result<String> {
        match given {
            Some(h) => {
                ss58_decode(h).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
                Ok(h.to_string())
            }
            None => read_wallet_hotkey(
                &self.wallet_path.clone().unwrap_or_else(default_wallet_path),
                &cfg.serve.wallet_name,
                &cfg.serve.wallet_hotkey,
            )
            .with_context(|| format!("no {flag} given and no local wallet hotkey")),
        }
    }
}

/// `--checkpoint`: a model reference (see `infer::ModelRef`). A command says what it uses it
/// for and its default with `#[command(mut_arg("model", |a| a.help(...)))]`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ModelArg {
    /// A checkpoint folder, a `latest` pointer, an export folder or exports/deployed.
    #[arg(long = "checkpoint", value_name = "DIR")]
    pub model: Option<PathBuf>,
}
