//! `cargo bench --bench ingest` (filled in by the ingest work).
fn main() {}
