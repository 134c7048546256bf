//! Small shared helpers: atomic file writes, hashing, progress bars, bitmap drawing with text,
//! Pillow's pixel rules.

pub mod fsx;
pub mod hash;
pub mod pil;
pub mod plot;
pub mod progress;
