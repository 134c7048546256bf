//! `cargo bench --bench augment`: time per validator level-3 challenge on a 640x480 image, whole
//! (pre-JPEG and with the JPEG round trip) and per stage. Quote it as a ratio against the
//! subnet's own pipeline run side by side (`tools/augment_reference.py`), not as an absolute.

use std::path::Path;

use image::DynamicImage;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sv72::augment::ops;
use sv72::config::AugmentConfig;

fn open_image(name: &str) -> DynamicImage {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/images")
        .join(name);
    image::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn bench_level3_challenge() {
    let img = open_image("rgb_640x480.jpg");
    let cfg = AugmentConfig::default();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let n = 200;
    for (label, encode) in [("pre-JPEG", false), ("full challenge", true)] {
        let t = std::time::Instant::now();
        for _ in 0..n {
            if encode {
                sv72::augment::validator_challenge(&img, Some(3), &cfg, &mut rng).unwrap();
            } else {
                let p = sv72::augment::sample_params(640, 480, 3, &cfg, &mut rng).unwrap();
                sv72::augment::apply_params(&img, &p, None).unwrap();
            }
        }
        let ms = t.elapsed().as_secs_f64() * 1000.0 / n as f64;
        println!("level-3 {label} on 640x480: {ms:.2} ms");
    }
}

fn bench_level3_stages() {
    use sv72::augment::validator::{apply_distortions, gnc_noise};
    let img = open_image("rgb_640x480.jpg").to_rgb8();
    let crop = sv72::augment::CropBox {
        i: 40,
        j: 100,
        h: 400,
        w: 400,
    };
    let n = 100;
    let time = |label: &str, f: &mut dyn FnMut()| {
        let t = std::time::Instant::now();
        for _ in 0..n {
            f();
        }
        println!(
            "{label:>14}: {:.3} ms",
            t.elapsed().as_secs_f64() * 1000.0 / n as f64
        );
    };
    let rot = ops::rotate_crop_nearest(&img, 7.5, crop).unwrap();
    time("rotate+crop", &mut || {
        ops::rotate_crop_nearest(&img, 7.5, crop).unwrap();
    });
    let t = ops::to_tensor(&rot);
    time("to_tensor", &mut || {
        ops::to_tensor(&rot);
    });
    time("resize_aa", &mut || {
        ops::resize_bilinear_aa(&t, 224, 224);
    });
    let u = ops::to_u8(&ops::resize_bilinear_aa(&t, 224, 224));
    let p = sv72::augment::AugParams::level0(224);
    for (label, set) in [
        ("CS", 0usize),
        ("CC", 1),
        ("JPEG", 2),
        ("GNC", 3),
        ("GB", 4),
    ] {
        let mut q = p.clone();
        match set {
            0 => q.cs = 2,
            1 => q.cc = 2,
            2 => q.jpeg = 2,
            3 => {
                q.gnc = 2;
                q.noise_seed = Some(1)
            }
            _ => q.gb = 2,
        }
        time(label, &mut || {
            let mut v = u.clone();
            apply_distortions(&mut v, &q, None).unwrap();
        });
    }
    time("noise only", &mut || {
        gnc_noise(1, 224, 224);
    });
    time("encode_jpeg", &mut || {
        sv72::augment::encode_jpeg(&u).unwrap();
    });
}

fn main() {
    bench_level3_challenge();
    bench_level3_stages();
}
