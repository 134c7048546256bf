//! `sv72 register` (built in issue #6).

use std::process::ExitCode;

use anyhow::Result;

use super::Ctx;

/// Flags of `sv72 register`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `sv72 register`.
pub fn run(_args: Args, _ctx: &Ctx) -> Result<ExitCode> {
    super::not_yet("register", 6)
}
