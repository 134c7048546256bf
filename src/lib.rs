//! sv72: a NATIX StreetVision (Bittensor subnet 72) miner toolkit.
//!
//! Library layout, imports flowing downwards only:
//! `cli` → `econ` (earnings from the chain against costs) → `cycle` (retrain-check, register,
//! mine-hard) → `serve` (the axon) → `eval` (reports, A/B) → `export` (Hugging Face folder,
//! deploy, push) → `infer` (model references, predictors, hot swap, batching) → `train` →
//! `features` → `model`, `data` → `augment` → `chain` (SCALE, JSON-RPC, metagraph, subnet
//! economics), `metrics`, `keys`, `backend`, `config`, `exit`, `util`; `generate`
//! (image-generation servers) → `config`, `util`.

pub mod augment;
pub mod backend;
pub mod bench;
pub mod chain;
pub mod cli;
pub mod config;
pub mod cycle;
pub mod data;
pub mod econ;
pub mod eval;
pub mod exit;
pub mod export;
pub mod features;
pub mod generate;
pub mod infer;
pub mod judge;
pub mod keys;
pub mod metrics;
pub mod model;
pub mod serve;
pub mod train;
pub mod util;
