//! `cargo bench --bench backbone` (filled in by the backbone work).
fn main() {}
