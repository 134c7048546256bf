//! `sv72 serve` (built in issue #5).

use std::process::ExitCode;

use anyhow::Result;

use super::Ctx;

/// Flags of `sv72 serve`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `sv72 serve`.
pub fn run(_args: Args, _ctx: &Ctx) -> Result<ExitCode> {
    super::not_yet("serve", 5)
}
