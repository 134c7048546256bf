//! The chain side of a miner: SCALE decoding (`scale`), JSON-RPC to a subtensor node (`rpc`),
//! the metagraph snapshot file and its reloading handle (`metagraph`), and `sv72 metagraph sync`
//! (`sync`), which reads the subnet's neurons into that file.

pub mod metagraph;
pub mod rpc;
pub mod scale;
pub mod sync;

pub use metagraph::{Metagraph, MetagraphHandle, Neuron};
pub use rpc::RpcClient;
pub use sync::{fetch_snapshot, write_snapshot, Snapshot, StakeSource, SyncOptions};
