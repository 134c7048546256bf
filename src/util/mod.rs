//! Small shared helpers: atomic file writes, hashing, progress bars, Pillow's pixel rules.

pub mod fsx;
pub mod hash;
pub mod pil;
pub mod progress;
