//! `sv72 ingest`.

use std::process::ExitCode;

use anyhow::Result;

use super::Ctx;

/// Flags of `sv72 ingest`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `sv72 ingest`.
pub fn run(_args: Args, _ctx: &Ctx) -> Result<ExitCode> {
    super::not_yet("ingest", 2)
}
