//! The backbone under a served model, and the head inputs it computes for a batch of images.

use anyhow::Result;
use burn::tensor::backend::Backend;
use image::RgbImage;
use rayon::prelude::*;

use crate::features::embed::extract_rows;
use crate::model::preprocess::Preprocess;
use crate::model::FeatureExtractor;
use crate::train::data::head_input;

pub use crate::model::Backbone;

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
