//! `sv72 fetch-backbone`.

use std::process::ExitCode;

use anyhow::Result;

use super::Ctx;

/// Flags of `sv72 fetch-backbone`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `sv72 fetch-backbone`.
pub fn run(_args: Args, _ctx: &Ctx) -> Result<ExitCode> {
    super::not_yet("fetch-backbone", 3)
}
