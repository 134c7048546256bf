//! `sv72 serve`: a bittensor-compatible miner axon for NATIX StreetVision's `ImageSynapse`.
//!
//! The wire format follows `shared/specs/axon-protocol.md`: `protocol` has the header, message
//! and nonce rules, `blacklist` who may query. The HTTP side: `options` (the `serve:` config),
//! `server` (runtime, accept loop, shutdown), `conn` (per-source cap, timeouts, shedding),
//! `pipeline` (one request through the checks), `image` (bounded decoding), `response` (the
//! answers), `predlog` (the prediction log), `metrics` and `ratelog` (Prometheus text, JSON event
//! lines), `telemetry` how inference (`crate::infer`) reports into them. `dendrite` is the
//! validator side (`sv72 query`). The validator set comes from `crate::chain`.

pub mod blacklist;
pub mod conn;
pub mod dendrite;
pub mod image;
pub mod metrics;
pub mod options;
pub mod pipeline;
pub mod predlog;
pub mod protocol;
pub mod ratelog;
pub mod response;
pub mod server;
pub mod telemetry;

pub use metrics::Metrics;
pub use options::ServeOptions;
pub use server::Server;
pub use telemetry::{Batcher, ModelSlot};
