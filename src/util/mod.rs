//! Small shared helpers: allocator settings, atomic file writes, hashing, progress bars, bitmap drawing with text,
//! Pillow's pixel rules.

pub mod alloc;
pub mod fsx;
pub mod hash;
pub mod pil;
pub mod plot;
pub mod progress;
