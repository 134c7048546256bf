//! The data layer: manifests, ingest, and the training mix.

pub mod demo;
pub mod manifest;
pub mod mix;
