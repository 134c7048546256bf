//! The chain side of a miner: SCALE decoding (`scale`), JSON-RPC to a subtensor node (`rpc`),
//! the metagraph snapshot file and its reloading handle (`metagraph`), `sv72 metagraph sync`
//! (`sync`), which reads the subnet's neurons into that file, and the subnet's pool, emission and
//! registration cost (`subnet`), which `sv72 econ` prices.

pub mod metagraph;
pub mod rpc;
pub mod scale;
pub mod subnet;
pub mod sync;

pub use metagraph::{Metagraph, MetagraphHandle, Neuron};
pub use rpc::RpcClient;
pub use subnet::{fetch_raw, read_subnet, RawSubnetRead, ReadOptions, SubnetRead};
pub use sync::{fetch_snapshot, write_snapshot, Snapshot, StakeSource, SyncOptions};
