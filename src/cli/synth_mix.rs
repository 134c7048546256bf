//! `sv72 synth-mix`.

use std::process::ExitCode;

use anyhow::Result;

use super::Ctx;

/// Flags of `sv72 synth-mix`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `sv72 synth-mix`.
pub fn run(_args: Args, _ctx: &Ctx) -> Result<ExitCode> {
    super::not_yet("synth-mix", 2)
}
