//! `sv72 serve`: a bittensor-compatible miner axon for NATIX StreetVision's `ImageSynapse`.
//!
//! The wire format follows `shared/specs/axon-protocol.md`: `protocol` has the header, message
//! and nonce rules, `metagraph` the validator set and blacklist, `batcher` the predictor, hot
//! swap and micro-batching. The HTTP side: `options` (the `serve:` config), `server` (runtime,
//! accept loop, shutdown), `conn` (per-source cap, timeouts, shedding), `pipeline` (one request
//! through the checks), `image` (bounded decoding), `response` (the answers), `predlog` (the
//! prediction log), `metrics` and `ratelog` (Prometheus text, JSON event lines). `subtensor` has
//! the chain reads behind `sv72 metagraph sync`.

pub mod batcher;
pub mod conn;
pub mod image;
pub mod metagraph;
pub mod metrics;
pub mod model;
pub mod options;
pub mod pipeline;
pub mod predlog;
pub mod protocol;
pub mod ratelog;
pub mod response;
pub mod server;
pub mod subtensor;

pub use batcher::{Loader, ModelSlot, Predictor};
pub use metagraph::{Metagraph, MetagraphHandle, Neuron};
pub use metrics::Metrics;
pub use options::ServeOptions;
pub use server::Server;
