//! `cargo bench --bench decode`: JPEG decode speed of the crate-wide decoder
//! (`data::decode::decode_rgb`, libjpeg-turbo's C code built without SIMD) against the `image`
//! crate's decoder (zune-jpeg) it replaced, on 640x480 and 224x224 JPEGs written with Pillow's
//! defaults (what validators send). One thread; the two decoders alternate round by round and
//! the ratio of medians is printed, so machine noise hits both alike.

use std::time::Instant;

use image::{Rgb, RgbImage};
use sv72::data::decode::{decode_rgb, DecodeLimits};

const ROUNDS: usize = 11;

fn photo(w: u32, h: u32, seed: u32) -> RgbImage {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    RgbImage::from_fn(w, h, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state % 24) as f32;
        let r = 110.0 + 90.0 * ((x as f32 + seed as f32 * 7.0) / 37.0).sin() + n;
        let g = 40.0 + 0.3 * y as f32 + n;
        let b = 60.0 + 0.25 * x as f32 + n;
        Rgb([
            r.clamp(0.0, 255.0) as u8,
            g.clamp(0.0, 255.0) as u8,
            b.clamp(0.0, 255.0) as u8,
        ])
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let limits = DecodeLimits {
        max_pixels: 40_000_000,
        max_file_bytes: 64 << 20,
    };
    for (w, h, n) in [(640, 480, 24), (224, 224, 96)] {
        let files: Vec<Vec<u8>> = (0..n)
            .map(|i| sv72::util::pil::encode_jpeg_pil(&photo(w, h, i)).expect("encode"))
            .collect();
        let ours = || {
            for f in &files {
                std::hint::black_box(decode_rgb(f, &limits).expect("decode"));
            }
        };
        let theirs = || {
            for f in &files {
                let img = image::load_from_memory_with_format(f, image::ImageFormat::Jpeg)
                    .expect("decode");
                std::hint::black_box(img.to_rgb8());
            }
        };
        ours();
        theirs();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let t = Instant::now();
            ours();
            a.push(t.elapsed().as_secs_f64() / n as f64);
            let t = Instant::now();
            theirs();
            b.push(t.elapsed().as_secs_f64() / n as f64);
        }
        let (ma, mb) = (median(a), median(b));
        println!(
            "{w}x{h}: libjpeg-turbo (sv72) {:.3} ms/image, image crate {:.3} ms/image, ratio {:.2}",
            ma * 1e3,
            mb * 1e3,
            ma / mb
        );
    }
}
