//! Backbones against `transformers` reference outputs: tiny random snapshots and their references
//! under tests/fixtures/backbones/, made by `tools/backbone_fixtures.py` (DINOv2, DINOv2 with
//! registers), `tools/backbone_fixtures_dinov3.py` (DINOv3), `tools/backbone_fixtures_siglip.py`
//! (SigLIP vision towers) and `tools/backbone_fixtures_siglip2.py` (SigLIP 2 NaFlex).

#[path = "backbones/bf16.rs"]
mod bf16;
#[cfg(feature = "cuda")]
#[path = "backbones/cuda.rs"]
mod cuda;
#[path = "backbones/dinov2.rs"]
mod dinov2;
#[path = "backbones/dinov3.rs"]
mod dinov3;
#[path = "backbones/siglip.rs"]
mod siglip;
#[path = "backbones/siglip2.rs"]
mod siglip2;
