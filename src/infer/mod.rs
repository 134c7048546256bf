//! Inference: what a model reference names ([`ModelRef`]), loading it as a [`Predictor`] on the
//! configured device (checkpoints, export folders and model specs with test-time views), the hot-swappable [`ModelSlot`], and the
//! stake-ordered micro-[`Batcher`]. Used by `serve`, `eval` (A/B tests), `export` and `cycle`.

pub mod backbone;
pub mod batch;
pub mod checkpoint;
pub mod ensemble;
pub mod export;
pub mod load;
pub mod model_ref;
pub mod predictor;
pub mod slot;
pub mod spec;
pub mod views;

pub use batch::{BatchOptions, Batcher, Outcome};
pub use checkpoint::CheckpointPredictor;
pub use ensemble::{fit_stacking, EnsemblePredictor, MemberGroup, Stacking};
pub use export::ExportPredictor;
pub use load::{
    default_model_path, ensemble_on_device, load_ensemble, load_predictor, model_loader,
    LoadOptions,
};
pub use model_ref::{is_export_dir, is_spec_file, ModelRef, SUMS_FILE};
pub use predictor::{ConstantPredictor, Loader, Predictor};
pub use slot::{fingerprint, ModelSlot, Telemetry};
pub use spec::{fitted_judge, JudgeFit, ModelSpec};
pub use views::{Aggregate, Calibration, View, ViewPredictor, ViewSpec};
