//! Small shared helpers: atomic file writes, hashing, progress bars, bitmap drawing with text.

pub mod fsx;
pub mod hash;
pub mod plot;
pub mod progress;
