//! `sv72 export`: a checkpoint as a Hugging Face image-classification folder with the subnet's
//! `model_card.json`.

pub mod card;
pub mod push;

pub use card::{ModelCard, Version};
pub use push::{push_folder, PushOptions, PushReport};
