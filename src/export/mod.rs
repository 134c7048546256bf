//! `sv72 export`: a checkpoint as a Hugging Face image-classification folder with the subnet's
//! `model_card.json`; `sv72 deploy`: the `exports/deployed` symlink.

pub mod build;
pub mod card;
pub mod deploy;
pub mod hf;
pub mod push;

pub use build::{
    check_hotkey, export_checkpoint, loads_in, next_version, verify_sums, ExportOutcome,
    ExportRequest, Provenance, DEPLOYED, LATEST, PROVENANCE_FILE, README_FILE, SUMS_FILE,
};
pub use card::{ModelCard, Version};
pub use deploy::{deploy, deployed_target, verify_export};
pub use hf::{BackboneTensors, Family, Form, OwnedTensors, SnapshotTensors, StackSupport, Target};
pub use push::{push_folder, PushOptions, PushReport};
