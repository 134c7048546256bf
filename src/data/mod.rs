//! The data layer: manifests, ingest, and the training mix.

pub mod manifest;
