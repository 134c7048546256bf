//! `sv72 ab-test` (built in issue #6).

use std::process::ExitCode;

use anyhow::Result;

use super::Ctx;

/// Flags of `sv72 ab-test`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `sv72 ab-test`.
pub fn run(_args: Args, _ctx: &Ctx) -> Result<ExitCode> {
    super::not_yet("ab-test", 6)
}
