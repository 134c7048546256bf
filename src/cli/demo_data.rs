//! `sv72 demo-data`.

use std::process::ExitCode;

use anyhow::Result;

use super::Ctx;

/// Flags of `sv72 demo-data`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `sv72 demo-data`.
pub fn run(_args: Args, _ctx: &Ctx) -> Result<ExitCode> {
    super::not_yet("demo-data", 2)
}
