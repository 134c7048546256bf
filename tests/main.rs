//! The integration tests, one binary: every file beside this one is a module here, so the crate
//! and its dependencies (burn, polars, hyper) are linked once instead of once per file (issue #10).
//! Run one area with `cargo test --test main abtest::`.

mod common;

mod abtest;
mod augment;
mod backbones;
mod cli;
mod cycle;
mod decode;
mod econ;
mod export;
mod features;
mod finetune;
mod generate;
mod ingest;
mod judge;
mod metagraph;
mod mine;
mod mix;
mod plots;
mod publish;
mod serve;
mod serve_load;
mod train;
mod views;
