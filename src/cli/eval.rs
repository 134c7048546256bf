//! `sv72 eval` (built in issue #4).

use std::process::ExitCode;

use anyhow::Result;

use super::Ctx;

/// Flags of `sv72 eval`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `sv72 eval`.
pub fn run(_args: Args, _ctx: &Ctx) -> Result<ExitCode> {
    super::not_yet("eval", 4)
}
