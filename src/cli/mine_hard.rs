//! `sv72 mine-hard` (built in issue #6).

use std::process::ExitCode;

use anyhow::Result;

use super::Ctx;

/// Flags of `sv72 mine-hard`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `sv72 mine-hard`.
pub fn run(_args: Args, _ctx: &Ctx) -> Result<ExitCode> {
    super::not_yet("mine-hard", 6)
}
