//! The data layer: manifests, ingest, and the training mix.

pub mod decode;
pub mod ingest;
pub mod manifest;
pub mod neardup;
pub mod phash;
pub mod quarantine;
pub mod sources;
