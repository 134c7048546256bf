//! 64-bit DCT perceptual hash (pHash) for near-duplicate detection.
//!
//! The image is reduced to luma, box-averaged down to 32×32, transformed with a 2-D DCT-II, and
//! the 8×8 lowest frequencies are compared with their median: one bit per coefficient. Box
//! averaging (not point sampling) makes the hash robust to JPEG re-encoding, mild noise and
//! resizing, while structural changes flip many bits.

use std::sync::OnceLock;

use image::{DynamicImage, GrayImage};

/// Side of the reduced image the DCT runs on.
const N: usize = 32;
/// Side of the low-frequency block that becomes the hash.
const K: usize = 8;

/// Number of differing bits between two hashes.
pub fn hamming(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

/// pHash of an image exactly as given (apply EXIF orientation first).
pub fn phash(img: &DynamicImage) -> u64 {
    match img {
        DynamicImage::ImageLuma8(g) => phash_luma(g),
        other => phash_luma(&other.to_luma8()),
    }
}

/// pHash of an 8-bit luma image.
pub fn phash_luma(img: &GrayImage) -> u64 {
    let small = downsample(img);
    let coeffs = low_dct(&small);
    let mut sorted = coeffs;
    sorted.sort_by(f64::total_cmp);
    let median = (sorted[K * K / 2 - 1] + sorted[K * K / 2]) / 2.0;
    coeffs
        .iter()
        .enumerate()
        .fold(0u64, |h, (i, c)| if *c > median { h | (1 << i) } else { h })
}

/// Box-averages `img` to N×N; every source pixel contributes to exactly one cell, and images
/// smaller than N on a side repeat pixels so that every cell has at least one.
fn downsample(img: &GrayImage) -> [f64; N * N] {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = [0.0f64; N * N];
    if w == 0 || h == 0 {
        return out;
    }
    let bounds = |len: usize, i: usize| {
        let a = i * len / N;
        let b = ((i + 1) * len / N).max(a + 1).min(len);
        (a.min(len - 1), b)
    };
    let xb: Vec<(usize, usize)> = (0..N).map(|i| bounds(w, i)).collect();
    let raw = img.as_raw();
    let mut col_sums = [0u64; N];
    for cy in 0..N {
        let (y0, y1) = bounds(h, cy);
        col_sums.fill(0);
        for y in y0..y1 {
            let row = &raw[y * w..(y + 1) * w];
            for (cx, &(x0, x1)) in xb.iter().enumerate() {
                col_sums[cx] += row[x0..x1].iter().map(|&p| p as u64).sum::<u64>();
            }
        }
        for (cx, &(x0, x1)) in xb.iter().enumerate() {
            out[cy * N + cx] = col_sums[cx] as f64 / ((x1 - x0) * (y1 - y0)) as f64;
        }
    }
    out
}

/// DCT-II basis `cos(pi/N * (x + 0.5) * u)` for the K lowest frequencies.
fn basis() -> &'static [[f64; N]; K] {
    static B: OnceLock<[[f64; N]; K]> = OnceLock::new();
    B.get_or_init(|| {
        let mut b = [[0.0; N]; K];
        for (u, row) in b.iter_mut().enumerate() {
            for (x, v) in row.iter_mut().enumerate() {
                *v = (std::f64::consts::PI / N as f64 * (x as f64 + 0.5) * u as f64).cos();
            }
        }
        b
    })
}

/// The K×K lowest-frequency coefficients of the separable 2-D DCT-II (row-major, v then u).
fn low_dct(px: &[f64; N * N]) -> [f64; K * K] {
    let b = basis();
    let mut rows = [[0.0f64; K]; N];
    for (y, r) in rows.iter_mut().enumerate() {
        let line = &px[y * N..(y + 1) * N];
        for (u, c) in r.iter_mut().enumerate() {
            *c = line.iter().zip(b[u].iter()).map(|(p, q)| p * q).sum();
        }
    }
    let mut out = [0.0f64; K * K];
    for v in 0..K {
        for u in 0..K {
            out[v * K + u] = (0..N).map(|y| b[v][y] * rows[y][u]).sum();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Luma, Rgb, RgbImage};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn scene(seed: u64, w: u32, h: u32) -> RgbImage {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let blobs: Vec<(f64, f64, f64, [u8; 3])> = (0..6)
            .map(|_| {
                (
                    rng.random_range(0.0..w as f64),
                    rng.random_range(0.0..h as f64),
                    rng.random_range(10.0..(w.min(h) as f64 / 2.5)),
                    [rng.random(), rng.random(), rng.random()],
                )
            })
            .collect();
        let fx = rng.random_range(5.0..40.0);
        RgbImage::from_fn(w, h, |x, y| {
            let (xf, yf) = (x as f64, y as f64);
            for (cx, cy, r, c) in &blobs {
                if (xf - cx).powi(2) + (yf - cy).powi(2) < r * r {
                    return Rgb(*c);
                }
            }
            let v = (127.0 + 100.0 * (xf / fx).sin() * (yf / 23.0).cos()) as u8;
            Rgb([v, v / 2, 255 - v])
        })
    }

    fn noisy(img: &RgbImage, amp: i32, seed: u64) -> RgbImage {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut out = img.clone();
        for p in out.pixels_mut() {
            for c in p.0.iter_mut() {
                *c = (*c as i32 + rng.random_range(-amp..=amp)).clamp(0, 255) as u8;
            }
        }
        out
    }

    #[test]
    fn identical_images_have_distance_zero() {
        let a = DynamicImage::ImageRgb8(scene(1, 320, 240));
        let b = DynamicImage::ImageRgb8(scene(1, 320, 240));
        assert_eq!(hamming(phash(&a), phash(&b)), 0);
    }

    #[test]
    fn small_noise_gives_small_distance() {
        let base = scene(2, 320, 240);
        let h0 = phash(&DynamicImage::ImageRgb8(base.clone()));
        let h1 = phash(&DynamicImage::ImageRgb8(noisy(&base, 12, 9)));
        let d = hamming(h0, h1);
        assert!(d <= 4, "noise moved the hash by {d} bits");
        // A rescaled copy is also a near duplicate.
        let resized =
            image::imageops::resize(&base, 200, 150, image::imageops::FilterType::Triangle);
        let d2 = hamming(h0, phash(&DynamicImage::ImageRgb8(resized)));
        assert!(d2 <= 6, "resize moved the hash by {d2} bits");
    }

    #[test]
    fn different_images_are_far_apart() {
        let hashes: Vec<u64> = (10..20)
            .map(|s| phash(&DynamicImage::ImageRgb8(scene(s, 320, 240))))
            .collect();
        let mut min = u32::MAX;
        for i in 0..hashes.len() {
            for j in i + 1..hashes.len() {
                min = min.min(hamming(hashes[i], hashes[j]));
            }
        }
        assert!(min >= 12, "two different scenes are only {min} bits apart");
    }

    #[test]
    fn flat_and_tiny_images_do_not_panic() {
        let flat = GrayImage::from_pixel(5, 3, Luma([77]));
        let _ = phash_luma(&flat);
        let one = GrayImage::from_pixel(1, 1, Luma([0]));
        let _ = phash_luma(&one);
        // A horizontal gradient and its mirror image differ in most bits.
        let g = GrayImage::from_fn(64, 64, |x, _| Luma([(x * 4) as u8]));
        let m = GrayImage::from_fn(64, 64, |x, _| Luma([(255 - x * 4) as u8]));
        assert!(hamming(phash_luma(&g), phash_luma(&m)) > 0);
    }
}
