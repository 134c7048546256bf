//! The data layer: manifests, ingest, the training mix (`mix` plans it, `synth_mix` is the
//! stage) and the demo set.

pub mod decode;
pub mod demo;
pub mod ingest;
pub mod manifest;
pub mod mix;
pub mod neardup;
pub mod phash;
pub mod quarantine;
pub mod sources;
pub mod synth_mix;
pub mod variants;
