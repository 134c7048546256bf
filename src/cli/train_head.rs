//! `sv72 train-head` (built in issue #4).

use std::process::ExitCode;

use anyhow::Result;

use super::Ctx;

/// Flags of `sv72 train-head`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `sv72 train-head`.
pub fn run(_args: Args, _ctx: &Ctx) -> Result<ExitCode> {
    super::not_yet("train-head", 4)
}
