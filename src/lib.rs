//! sv72: a NATIX StreetVision (Bittensor subnet 72) miner toolkit.
//!
//! Library layout, imports flowing downwards only:
//! `cli` → stages (`data`, `augment`, `model`, `features`) → `backend`, `config`, `util`.

pub mod augment;
pub mod backend;
pub mod cli;
pub mod config;
pub mod cycle;
pub mod data;
pub mod eval;
pub mod export;
pub mod features;
pub mod metrics;
pub mod model;
pub mod serve;
pub mod train;
pub mod util;
