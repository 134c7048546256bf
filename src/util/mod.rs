//! Small shared helpers: atomic file writes, hashing, progress bars.

pub mod fsx;
pub mod hash;
pub mod progress;
