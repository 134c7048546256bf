//! `sv72 embed`.

use std::process::ExitCode;

use anyhow::Result;

use super::Ctx;

/// Flags of `sv72 embed`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `sv72 embed`.
pub fn run(_args: Args, _ctx: &Ctx) -> Result<ExitCode> {
    super::not_yet("embed", 3)
}
