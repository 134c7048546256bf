//! `sv72 serve`: run the miner axon until SIGINT/SIGTERM.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::args::{DeviceArg, ModelArg, WalletPathArg};
use super::Ctx;
use crate::chain::MetagraphHandle;
use crate::infer::{default_model_path, model_loader, ConstantPredictor, Loader, Predictor};
use crate::serve::{Metrics, ModelSlot, ServeOptions, Server};

/// Flags of `sv72 serve`.
#[derive(Debug, clap::Args)]
#[command(mut_arg("model", |a| a.help(
    "Model to serve: a run folder, a `latest` pointer, an export folder or exports/deployed \
     (default: serve.model when it exists, else paths.checkpoints/latest). Watched for hot swaps."
)))]
pub struct Args {
    /// Our hotkey as SS58 (default: read from the wallet serve.wallet_name/serve.wallet_hotkey).
    #[arg(long, value_name = "SS58")]
    pub hotkey: Option<String>,
    #[command(flatten)]
    pub wallet: WalletPathArg,
    /// Metagraph snapshot JSON (default: serve.metagraph); reloaded when it changes.
    #[arg(long, value_name = "FILE")]
    pub metagraph: Option<PathBuf>,
    /// Port (default: serve.port).
    #[arg(long)]
    pub port: Option<u16>,
    /// Answer this constant instead of loading serve.model: a protocol smoke test only, never
    /// for mining (validators score it as chance).
    #[arg(long, value_name = "P")]
    pub constant_prediction: Option<f32>,
    /// Send the image back in responses, as the Python axon does.
    #[arg(long)]
    pub echo_image: bool,
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub device: DeviceArg,
}

/// Runs `sv72 serve`.
pub fn run(args: Args, ctx: &Ctx) -> Result<ExitCode> {
    let loader: Arc<Loader> = match args.constant_prediction {
        Some(p) if (0.0..=1.0).contains(&p) => {
            Arc::new(move |_: &Path| Ok(Box::new(ConstantPredictor(p)) as Box<dyn Predictor>))
        }
        Some(p) => bail!("--constant-prediction {p} must be within [0, 1]"),
        None => model_loader(&ctx.config, args.device.or_config(&ctx.config))?,
    };
    let watch = args.constant_prediction.is_none();
    run_with(args, ctx, loader, watch)
}

/// Serves with `loader` building predictors from `--checkpoint` (default
/// [`default_model_path`]); with `watch`, a changed model path is loaded beside the running model and swapped in when it probes well.
pub fn run_with(args: Args, ctx: &Ctx, loader: Arc<Loader>, watch: bool) -> Result<ExitCode> {
    let cfg = &ctx.config.serve;
    let hotkey = args
        .wallet
        .axon_hotkey(args.hotkey.as_deref(), "--hotkey", &ctx.config)?;
    let mut opts = ServeOptions::from_config(cfg, hotkey)?;
    if let Some(p) = args.port {
        opts.addr.set_port(p);
    }
    opts.echo_image |= args.echo_image;
    opts.handle_signals = true;
    let mg_path = args
        .metagraph
        .clone()
        .unwrap_or_else(|| cfg.metagraph.clone());
    let metagraph = Arc::new(MetagraphHandle::from_file(&mg_path)?);
    let model = args
        .model
        .model
        .clone()
        .unwrap_or_else(|| default_model_path(&ctx.config));
    opts.judge = crate::judge::Judge::for_model(&ctx.config.judge, &model)?;
    let first = loader(&model).with_context(|| format!("cannot serve {}", model.display()))?;
    eprintln!(
        "sv72 serve: model {} from {}",
        first.version(),
        model.display()
    );
    if let Some(j) = &opts.judge {
        eprintln!(
            "sv72 serve: judge {} at weight {:.2}",
            j.describe().0,
            j.weight()
        );
    }
    let metrics = Arc::new(Metrics::new());
    let slot = ModelSlot::new(first, metrics);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch.then(|| {
        slot.watch(
            model.clone(),
            loader.clone(),
            Duration::from_secs(2),
            stop.clone(),
        )
    });
    let server = Server::start(opts, metagraph, slot)?;
    eprintln!(
        "sv72 serve: listening on {} (metrics at /metrics, health at /healthz); Ctrl-C stops",
        server.addr()
    );
    let r = server.wait();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(w) = watcher {
        let _ = w.join();
    }
    r.map(|_| ExitCode::SUCCESS)
}
