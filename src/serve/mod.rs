//! `sv72 serve`: a bittensor-compatible miner axon for NATIX StreetVision's `ImageSynapse`.
//!
//! The wire format follows `shared/specs/axon-protocol.md`: `protocol` has the header, message
//! and nonce rules, `blacklist` who may query, `server` the HTTP side, `metrics` the Prometheus
//! text and JSON logs, `telemetry` how inference (`crate::infer`) reports into them, `predlog`
//! the prediction log, `dendrite` the validator side (`sv72 query`). The validator set comes from
//! `crate::chain`.

pub mod blacklist;
pub mod dendrite;
pub mod metrics;
pub mod predlog;
pub mod protocol;
pub mod server;
pub mod telemetry;

pub use metrics::Metrics;
pub use server::{ServeOptions, Server};
pub use telemetry::{Batcher, ModelSlot};
