//! `cargo bench --bench ingest`: throughput of ingest's per-image work (read bytes already in
//! memory → blake3 content hash → header check → decode → EXIF orientation → pHash) on 640×480
//! JPEGs with 2 worker threads. Goal: ≥ 200 images/s.

use std::io::Cursor;
use std::time::Instant;

use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use rayon::prelude::*;
use sv72::config::SplitConfig;
use sv72::data::decode::{analyze, DecodeLimits};
use sv72::data::neardup::{assign_groups, NewMember};
use sv72::util::hash::content_hash;

const THREADS: usize = 2;
const IMAGES: usize = 64;
const ROUNDS: usize = 6;

/// Photo-like 640×480 content (gradients, edges and noise) so JPEG sizes are realistic.
fn photo(seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let img = RgbImage::from_fn(640, 480, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state % 24) as f32;
        let band = if (x / 40 + y / 30 + seed).is_multiple_of(5) {
            80.0
        } else {
            0.0
        };
        let r = 110.0 + 90.0 * ((x as f32 + seed as f32 * 7.0) / 37.0).sin() + n;
        let g = 40.0 + 0.3 * y as f32 + band + n;
        let b = 60.0 + 0.25 * x as f32 + n;
        Rgb([
            r.clamp(0.0, 255.0) as u8,
            g.clamp(0.0, 255.0) as u8,
            b.clamp(0.0, 255.0) as u8,
        ])
    });
    let mut buf = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img)
        .write_to(&mut buf, ImageFormat::Jpeg)
        .expect("encode");
    buf.into_inner()
}

fn main() {
    let files: Vec<Vec<u8>> = (0..IMAGES as u32).map(photo).collect();
    let mean_kb = files.iter().map(Vec::len).sum::<usize>() as f64 / IMAGES as f64 / 1024.0;
    let limits = DecodeLimits {
        max_pixels: 40_000_000,
        max_file_bytes: 64 << 20,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(THREADS)
        .build()
        .expect("thread pool");
    let work = || {
        pool.install(|| {
            files
                .par_iter()
                .map(|b| {
                    let id = content_hash(b);
                    let info = analyze(b, &limits).expect("valid JPEG");
                    id.len() as u64 ^ info.phash
                })
                .reduce(|| 0, |a, b| a ^ b)
        })
    };
    std::hint::black_box(work()); // warm-up
    let mut best = f64::MAX;
    let mut total = 0.0;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        std::hint::black_box(work());
        let s = t.elapsed().as_secs_f64();
        best = best.min(s);
        total += s;
    }
    let mean = total / ROUNDS as f64;
    println!(
        "ingest per-image work (blake3 + decode + EXIF orientation + pHash), 640x480 JPEG \
         (~{mean_kb:.0} KiB), {THREADS} threads: {:.0} images/s mean, {:.0} images/s best \
         (goal >= 200/s)",
        IMAGES as f64 / mean,
        IMAGES as f64 / best
    );
    grouping_at_scale();
}

/// Near-duplicate grouping of 100k images (20k scenes × 5 variants a few bits apart).
fn grouping_at_scale() {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut hashes = Vec::with_capacity(100_000);
    for _ in 0..20_000 {
        let base = next();
        for _ in 0..5 {
            let mut h = base;
            for _ in 0..(next() % 4) {
                h ^= 1 << (next() % 64);
            }
            hashes.push(h);
        }
    }
    let ids: Vec<String> = (0..hashes.len() as u64)
        .map(|i| content_hash(&i.to_le_bytes()))
        .collect();
    let new: Vec<NewMember> = ids
        .iter()
        .zip(&hashes)
        .map(|(id, &phash)| NewMember::new(id, phash))
        .collect();
    let t = Instant::now();
    let g = assign_groups(&[], &new, 6, &SplitConfig::default(), &Default::default());
    let groups: std::collections::HashSet<&str> =
        g.assignments.iter().map(|a| a.group.as_str()).collect();
    println!(
        "near-duplicate grouping of {} pHashes (radius 6): {:.2} s, {} groups",
        new.len(),
        t.elapsed().as_secs_f64(),
        groups.len()
    );
}
