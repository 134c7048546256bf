//! Diversity: k-centre greedy (farthest-first traversal) on image embeddings, and the embeddings
//! themselves, `[CLS ; patch mean]` of the clean image through the feature cache.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use image::DynamicImage;
use rayon::prelude::*;

use crate::features::embed::{compute_features, NO_AUG};
use crate::features::FeatureCache;
use crate::model::preprocess::Preprocess;
use crate::model::FeatureExtractor;
use crate::train::data::head_input;

pub use crate::config::Distance;

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt()
}

/// The distance between `a` and `b` (equal lengths). A zero vector is at cosine distance 1 from
/// everything, so it never collapses onto other points.
pub fn distance(a: &[f32], b: &[f32], metric: Distance) -> f64 {
    match metric {
        Distance::L2 => a
            .iter()
            .zip(b)
            .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
            .sum::<f64>()
            .sqrt(),
        Distance::Cosine => {
            let (na, nb) = (norm(a), norm(b));
            if na == 0.0 || nb == 0.0 {
                return 1.0;
            }
            let dot: f64 = a
                .iter()
                .zip(b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            (1.0 - dot / (na * nb)).max(0.0)
        }
    }
}

/// k-centre greedy: starts at `start`, then repeatedly adds the point farthest from everything
/// chosen so far, until `k` points (or all of them) are chosen. Returns indices in the order
/// chosen. Ties go to the lowest index, so with points sorted hardest first the harder case
/// wins; the result is deterministic. `start` out of range (or `k == 0`) gives an empty list.
pub fn k_center_greedy(
    points: &[Vec<f32>],
    k: usize,
    start: usize,
    metric: Distance,
) -> Vec<usize> {
    let n = points.len();
    if k == 0 || start >= n {
        return Vec::new();
    }
    // Cosine on unit vectors is 1 − dot: normalise once instead of per pair.
    let unit: Option<Vec<Vec<f32>>> = (metric == Distance::Cosine).then(|| {
        points
            .iter()
            .map(|p| {
                let n = norm(p);
                p.iter()
                    .map(|x| {
                        if n == 0.0 {
                            0.0
                        } else {
                            (f64::from(*x) / n) as f32
                        }
                    })
                    .collect()
            })
            .collect()
    });
    let dist = |i: usize, j: usize| -> f64 {
        match &unit {
            Some(u) => {
                let dot: f64 = u[i]
                    .iter()
                    .zip(&u[j])
                    .map(|(x, y)| f64::from(*x) * f64::from(*y))
                    .sum();
                (1.0 - dot).max(0.0)
            }
            None => distance(&points[i], &points[j], metric),
        }
    };
    let mut chosen = vec![start];
    let mut taken = vec![false; n];
    taken[start] = true;
    let mut nearest: Vec<f64> = (0..n).into_par_iter().map(|i| dist(i, start)).collect();
    while chosen.len() < k.min(n) {
        let mut best: Option<(usize, f64)> = None;
        for (i, d) in nearest.iter().enumerate() {
            if taken[i] {
                continue;
            }
            let d = if d.is_nan() { 0.0 } else { *d };
            if best.is_none_or(|(_, bd)| d > bd) {
                best = Some((i, d));
            }
        }
        let Some((pick, _)) = best else { break };
        taken[pick] = true;
        chosen.push(pick);
        nearest
            .par_iter_mut()
            .enumerate()
            .filter(|(i, _)| !taken[*i])
            .for_each(|(i, slot)| *slot = slot.min(dist(i, pick)));
    }
    chosen
}

/// Embeddings of images (clean view, cached under their content `id`).
#[derive(Debug, Default)]
pub struct Embedded {
    /// `[CLS ; patch mean]` per input, `None` where the image could not be read.
    pub vectors: Vec<Option<Vec<f32>>>,
    /// `(input index, reason)` of images that failed.
    pub failed: Vec<(usize, String)>,
    pub cache_hits: usize,
    pub computed: usize,
}

/// Embeds `(id, path)` images with `extractor` through `cache` (progress bar on misses). Images
/// that cannot be decoded are reported in `failed`, never fatal.
pub fn embed_images<B, E>(
    extractor: &E,
    device: &B::Device,
    images: &[(String, PathBuf)],
    preprocess: &Preprocess,
    batch_size: usize,
    cache: &mut FeatureCache,
) -> Result<Embedded>
where
    B: Backend,
    E: FeatureExtractor<B> + ?Sized,
{
    let keys: Vec<(String, String)> = images
        .iter()
        .map(|(id, _)| (id.clone(), NO_AUG.to_string()))
        .collect();
    let computed = compute_features(
        extractor,
        device,
        &keys,
        |i| open_any(&images[i].1),
        preprocess,
        batch_size,
        cache,
    )?;
    Ok(Embedded {
        vectors: computed
            .rows
            .iter()
            .map(|r| r.as_ref().map(head_input))
            .collect(),
        failed: computed.failed,
        cache_hits: computed.cache_hits,
        computed: computed.computed,
    })
}

/// Decodes an image file, sniffing the format from its bytes (serve keeps `<hash>.img` files).
pub fn open_any(path: &std::path::Path) -> Result<DynamicImage> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot open image {}", path.display()))?;
    let rgb = crate::data::decode::decode_rgb_any(&bytes)
        .with_context(|| format!("cannot decode image {}", path.display()))?;
    Ok(DynamicImage::ImageRgb8(rgb))
}
