//! Materialised augmented variants: K training views per image written to the content-addressed
//! store and recorded in the manifest (`variant_of`, `aug`), for people who want to inspect or
//! ship the exact images a head was trained on.

use std::path::Path;

use anyhow::{Context, Result};
use image::DynamicImage;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::augment::{training_view, validator::encode_jpeg};
use crate::config::AugmentConfig;
use crate::data::ingest::store_bytes;
use crate::data::manifest::{ManifestRow, Split};
use crate::util::{hash, progress};

/// The seed of variant `k` of image `id`: independent of order and thread count.
pub fn variant_seed(seed: u64, id: &str, k: usize) -> u64 {
    hash::stable_u64(&format!("{seed}/{id}/{k}"))
}

/// Writes `k` augmented variants of every train row into the store under `datasets_root` and
/// returns their manifest rows. Rows whose image cannot be read are skipped with a warning (they
/// were ingested fine, so this means the file changed since); the count is returned too.
pub fn materialize(
    rows: &[ManifestRow],
    k: usize,
    datasets_root: &Path,
    cfg: &AugmentConfig,
    seed: u64,
) -> Result<(Vec<ManifestRow>, usize)> {
    let train: Vec<&ManifestRow> = rows
        .iter()
        .filter(|r| r.split == Split::Train && r.variant_of.is_none())
        .collect();
    let pb = progress::bar((train.len() * k) as u64, "variants");
    let now = chrono::Utc::now().to_rfc3339();
    let results: Vec<Result<Vec<ManifestRow>>> = train
        .par_iter()
        .map(|row| {
            let path = row.resolve_path(datasets_root);
            let bytes = std::fs::read(&path)
                .with_context(|| format!("cannot read {} (id {})", path.display(), row.id))?;
            let img = DynamicImage::ImageRgb8(
                crate::data::decode::decode_rgb_any(&bytes)
                    .with_context(|| format!("cannot decode {} (id {})", path.display(), row.id))?,
            );
            let mut out = Vec::with_capacity(k);
            for i in 0..k {
                let mut rng = ChaCha8Rng::seed_from_u64(variant_seed(seed, &row.id, i));
                let (view, aug) = training_view(&img, cfg, &mut rng)?;
                let bytes = encode_jpeg(&view)?;
                let id = hash::content_hash(&bytes);
                let rel = store_bytes(datasets_root, &id, "jpg", &bytes)?;
                out.push(ManifestRow {
                    id,
                    path: rel,
                    width: view.width(),
                    height: view.height(),
                    format: "jpeg".into(),
                    ingested_at: now.clone(),
                    origin: format!("{}#variant{i}", row.origin),
                    variant_of: Some(row.id.clone()),
                    aug: Some(aug),
                    ..(*row).clone()
                });
                pb.inc(1);
            }
            Ok(out)
        })
        .collect();
    pb.finish_and_clear();
    let mut variants = Vec::new();
    let mut failed = 0;
    for r in results {
        match r {
            Ok(v) => variants.extend(v),
            Err(e) => {
                failed += 1;
                eprintln!("warning: no variants for one image: {e:#}");
            }
        }
    }
    Ok((variants, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_differ_per_image_and_index() {
        assert_ne!(variant_seed(1, "a", 0), variant_seed(1, "a", 1));
        assert_ne!(variant_seed(1, "a", 0), variant_seed(1, "b", 0));
        assert_eq!(variant_seed(1, "a", 0), variant_seed(1, "a", 0));
    }
}
