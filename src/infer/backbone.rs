//! The backbone under a served model, and the head inputs it computes for a batch of images.

use std::path::Path;

use anyhow::{bail, Result};
use burn::tensor::backend::Backend;
use image::RgbImage;
use rayon::prelude::*;

use crate::features::embed::extract_rows;
use crate::model::preprocess::Preprocess;
use crate::model::{dinov2, dinov3, model_type, BackboneOutput, FeatureExtractor};
use crate::train::data::head_input;

/// A backbone of either supported family, as a concrete (and therefore `Send`) type.
pub enum Backbone<B: Backend> {
    Dinov2(dinov2::Dinov2Model<B>),
    Dinov3(dinov3::Dinov3Model<B>),
}

impl<B: Backend> Backbone<B> {
    /// Loads a snapshot folder, dispatching on its `model_type`.
    pub fn load(snapshot: &Path, device: &B::Device) -> Result<Self> {
        let kind = model_type(snapshot)?;
        match kind.as_str() {
            "dinov2" | "dinov2_with_registers" => {
                Ok(Backbone::Dinov2(dinov2::load(snapshot, device)?))
            }
            dinov3::MODEL_TYPE => Ok(Backbone::Dinov3(dinov3::load(snapshot, device)?)),
            other => bail!(
                "{}: unsupported model_type {other:?}; sv72 serves dinov2, \
                 dinov2_with_registers and dinov3_vit backbones",
                snapshot.join("config.json").display()
            ),
        }
    }
}

impl<B: Backend> FeatureExtractor<B> for Backbone<B> {
    fn extract(
        &self,
        pixel_values: burn::tensor::Tensor<B, 4>,
        want_hidden: bool,
    ) -> BackboneOutput<B> {
        match self {
            Backbone::Dinov2(m) => m.extract(pixel_values, want_hidden),
            Backbone::Dinov3(m) => m.extract(pixel_values, want_hidden),
        }
    }
    fn hidden_size(&self) -> usize {
        match self {
            Backbone::Dinov2(m) => m.hidden_size(),
            Backbone::Dinov3(m) => m.hidden_size(),
        }
    }
    fn patch_size(&self) -> usize {
        match self {
            Backbone::Dinov2(m) => m.patch_size(),
            Backbone::Dinov3(m) => m.patch_size(),
        }
    }
}

/// Head inputs `[CLS ; patch mean]` of `images` through `backbone`, row-major
/// `[n, 2·hidden]`, in forward passes of at most `max_batch` images.
pub fn head_features<B: Backend>(
    backbone: &Backbone<B>,
    preprocess: &Preprocess,
    device: &B::Device,
    max_batch: usize,
    images: &[RgbImage],
) -> Result<Vec<f32>> {
    let d2 = 2 * backbone.hidden_size();
    let mut out = vec![0f32; images.len() * d2];
    let prepared: Vec<(Vec<f32>, (u32, u32))> = images
        .par_iter()
        .map(|im| {
            (
                preprocess.pixel_values_rgb(im),
                preprocess.output_size(im.width(), im.height()),
            )
        })
        .collect();
    // Group by output size: a processor recipe without a crop keeps aspect ratios.
    let mut order: Vec<usize> = (0..images.len()).collect();
    order.sort_by_key(|&i| prepared[i].1);
    for group in order.chunk_by(|&a, &b| prepared[a].1 == prepared[b].1) {
        let (h, w) = prepared[group[0]].1;
        for chunk in group.chunks(max_batch) {
            let mut pixels = Vec::with_capacity(chunk.len() * 3 * (h * w) as usize);
            for &i in chunk {
                pixels.extend_from_slice(&prepared[i].0);
            }
            let rows = extract_rows(
                backbone,
                device,
                pixels,
                chunk.len(),
                h as usize,
                w as usize,
            )?;
            for (&i, r) in chunk.iter().zip(&rows) {
                out[i * d2..(i + 1) * d2].copy_from_slice(&head_input(r));
            }
        }
    }
    Ok(out)
}
