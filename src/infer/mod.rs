//! Inference: what a model reference names ([`ModelRef`]), loading it as a [`Predictor`] on the
//! configured device (checkpoints and export folders), the hot-swappable [`ModelSlot`], and the
//! stake-ordered micro-[`Batcher`]. Used by `serve`, `eval` (A/B tests), `export` and `cycle`.

pub mod backbone;
pub mod batch;
pub mod checkpoint;
pub mod export;
pub mod load;
pub mod model_ref;
pub mod predictor;
pub mod slot;

pub use batch::{BatchOptions, Batcher, Outcome};
pub use checkpoint::CheckpointPredictor;
pub use export::ExportPredictor;
pub use load::{default_model_path, load_predictor, model_loader, LoadOptions};
pub use model_ref::{is_export_dir, ModelRef, SUMS_FILE};
pub use predictor::{ConstantPredictor, Loader, Predictor};
pub use slot::{fingerprint, ModelSlot, Telemetry};
