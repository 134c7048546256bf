//! `sv72 serve`: a bittensor-compatible miner axon for NATIX StreetVision's `ImageSynapse`.
//!
//! The wire format follows `shared/specs/axon-protocol.md`: `protocol` has the header, message
//! and nonce rules, `metagraph` the validator set and blacklist,
//! `batcher` the predictor, hot swap and micro-batching, `server` the HTTP side, `metrics` the
//! Prometheus text and JSON logs, `subtensor` the chain reads behind `sv72 metagraph sync`.

pub mod batcher;
pub mod metagraph;
pub mod metrics;
pub mod model;
pub mod predlog;
pub mod protocol;
pub mod server;
pub mod subtensor;

pub use batcher::{Loader, ModelSlot, Predictor};
pub use metagraph::{Metagraph, MetagraphHandle, Neuron};
pub use metrics::Metrics;
pub use server::{ServeOptions, Server};
