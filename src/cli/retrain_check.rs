//! `sv72 retrain-check` (built in issue #6).

use std::process::ExitCode;

use anyhow::Result;

use super::Ctx;

/// Flags of `sv72 retrain-check`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `sv72 retrain-check`.
pub fn run(_args: Args, _ctx: &Ctx) -> Result<ExitCode> {
    super::not_yet("retrain-check", 6)
}
