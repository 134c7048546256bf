//! Augmentation library: parity with the subnet's Python pipeline (fixtures written by
//! `tools/augment_reference.py`) and properties of the sampler and the weather ops.

use std::path::{Path, PathBuf};

use image::{DynamicImage, RgbImage};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safetensors::SafeTensors;
use sv72::augment::ops;
use sv72::config::AugmentConfig;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn open_image(name: &str) -> DynamicImage {
    image::open(fixtures().join("images").join(name)).unwrap()
}

/// A reference file: raw bytes plus its JSON `params` list.
struct Reference {
    bytes: Vec<u8>,
    params: Vec<serde_json::Value>,
}

impl Reference {
    fn load(name: &str) -> Self {
        let path = fixtures()
            .join("augment")
            .join(format!("{name}.safetensors"));
        let bytes = std::fs::read(&path).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let params = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("params"))
            .map(|p| serde_json::from_str(p).unwrap())
            .unwrap();
        Self { bytes, params }
    }

    fn raw(&self, key: &str) -> (Vec<usize>, Vec<u8>) {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(key).unwrap_or_else(|e| panic!("{key}: {e}"));
        (t.shape().to_vec(), t.data().to_vec())
    }

    fn rgb(&self, key: &str) -> RgbImage {
        let (shape, data) = self.raw(key);
        assert_eq!(shape.len(), 3, "{key} is not HWC");
        RgbImage::from_raw(shape[1] as u32, shape[0] as u32, data).unwrap()
    }

    fn f32s(&self, key: &str) -> (Vec<usize>, Vec<f32>) {
        let (shape, data) = self.raw(key);
        let v = data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (shape, v)
    }
}

/// Max |a - b| over all channels, and the fraction of values that differ at all.
fn diff(a: &RgbImage, b: &RgbImage) -> (u8, f64) {
    assert_eq!(a.dimensions(), b.dimensions());
    let mut max = 0u8;
    let mut n = 0usize;
    for (x, y) in a.as_raw().iter().zip(b.as_raw()) {
        let d = x.abs_diff(*y);
        max = max.max(d);
        n += (d > 0) as usize;
    }
    (max, n as f64 / a.as_raw().len() as f64)
}

mod parity {
    use super::*;
    use sv72::augment::validator::{self, AugParams};
    use sv72::augment::CropBox;

    /// Level 0 (ConvertToRGB, centre crop, Pillow bilinear resize, ToTensor, ToPILImage) is
    /// integer arithmetic on both sides: exact, max |Δ| = 0.
    #[test]
    fn level0_matches_pillow_exactly() {
        let r = Reference::load("level0");
        for (i, p) in r.params.iter().enumerate() {
            let img = open_image(p["file"].as_str().unwrap());
            let size = p["size"].as_u64().unwrap() as u32;
            let out = validator::apply_params(&img, &AugParams::level0(size), None).unwrap();
            let (max, frac) = diff(&out, &r.rgb(&format!("out{i}")));
            assert_eq!(max, 0, "case {p}: {:.4}% values differ", frac * 100.0);
        }
    }

    /// NEAREST rotation copies pixels; the sampling grid is computed in torch's float32 order,
    /// so the same source pixels are picked: exact (a position within float rounding of a
    /// half-pixel tie could in principle pick the neighbour; none do on these inputs).
    #[test]
    fn rotation_matches_torchvision() {
        let r = Reference::load("rotation");
        let input = r.rgb("input");
        let full = CropBox {
            i: 0,
            j: 0,
            h: input.height() as usize,
            w: input.width() as usize,
        };
        for (i, p) in r.params.iter().enumerate() {
            let angle = p["angle"].as_f64().unwrap();
            let out = ops::rotate_crop_nearest(&input, angle, full).unwrap();
            let (_, frac) = diff(&out, &r.rgb(&format!("out{i}")));
            assert_eq!(frac, 0.0, "angle {angle}: {:.3}% differ", frac * 100.0);
        }
    }

    /// RandomResizedCrop on a float tensor (bilinear, antialias=True), upscale and downscale
    /// by 1.2x to 4.8x: weights, bounds and torch's FMA/unroll rounding pattern are reproduced,
    /// so the f32 output is bit-identical (max |Δ| = 0).
    #[test]
    fn resized_crop_matches_torch_antialias() {
        let r = Reference::load("rrc");
        let input = r.rgb("input");
        for (k, p) in r.params.iter().enumerate() {
            let c: Vec<u32> = p["crop"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let size = p["size"].as_u64().unwrap() as usize;
            let crop = image::imageops::crop_imm(&input, c[1], c[0], c[3], c[2]).to_image();
            let out = ops::resize_bilinear_aa(&ops::to_tensor(&crop), size, size);
            let (shape, want) = r.f32s(&format!("out{k}"));
            assert_eq!(shape, vec![size, size, 3]);
            let mut max = 0f32;
            for (idx, w) in want.iter().enumerate() {
                let (y, x, ch) = (idx / (size * 3), (idx / 3) % size, idx % 3);
                max = max.max((out.get(ch, x, y) - w).abs());
            }
            assert_eq!(max, 0.0, "case {p}: max |Δ| = {max}");
        }
    }

    /// Each DeeperForensics op at levels 1-3 on two inputs (one with odd sizes). Every op is
    /// reproduced bit-exactly (CS/GNC: OpenCV float YCrCb in the same float32 order; CC: numpy
    /// truncation; JPEG: OpenCV's fixed-point INTER_LINEAR and its exact-2x INTER_AREA switch;
    /// GB: OpenCV's bit-exact 8-bit Gaussian), so the tolerance is max |Δ| = 0.
    #[test]
    fn deeperforensics_ops_match_opencv() {
        let r = Reference::load("distortions");
        let mut report = Vec::new();
        let mut failures = Vec::new();
        for p in &r.params {
            let key = p["input"].as_str().unwrap();
            let op = p["op"].as_str().unwrap();
            let level = p["level"].as_u64().unwrap() as u8;
            let name = format!("{key}_{op}_{level}");
            let mut img = r.rgb(&format!("input_{key}"));
            let mut params = AugParams::level0(img.width());
            params.level = 3;
            match op {
                "CS" => params.cs = level,
                "CC" => params.cc = level,
                "JPEG" => params.jpeg = level,
                "GNC" => params.gnc = level,
                "GB" => params.gb = level,
                other => panic!("unknown op {other}"),
            }
            let noise = (op == "GNC").then(|| r.f32s(&format!("noise_{name}")).1);
            validator::apply_distortions(&mut img, &params, noise.as_deref()).unwrap();
            let (max, frac) = diff(&img, &r.rgb(&name));
            report.push(format!("{name}: max {max} frac {frac:.4}"));
            if max != 0 {
                failures.push(name.clone());
            }
        }
        eprintln!("{}", report.join("\n"));
        assert!(failures.is_empty(), "outside tolerance: {failures:?}");
    }

    fn pipeline_params(p: &serde_json::Value) -> AugParams {
        let c: Vec<usize> = p["crop"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let lv = |k: &str| p["levels"].get(k).and_then(|v| v.as_u64()).unwrap_or(0) as u8;
        let mut a = AugParams::level0(p["size"].as_u64().unwrap() as u32);
        a.level = p["level"].as_u64().unwrap() as u8;
        a.angle = Some(p["angle"].as_f64().unwrap() as f32);
        a.crop = Some(CropBox {
            i: c[0],
            j: c[1],
            h: c[2],
            w: c[3],
        });
        (a.cs, a.cc, a.jpeg, a.gnc, a.gb) = (lv("CS"), lv("CC"), lv("JPEG"), lv("GNC"), lv("GB"));
        a
    }

    /// Whole challenges (rotation on the full image, crop, distortions incl. GNC with the
    /// reference's noise, ToPILImage) at levels 1-3: every step is bit-exact, so max |Δ| = 0.
    #[test]
    fn full_pipeline_matches_subnet() {
        let r = Reference::load("pipeline");
        for (k, p) in r.params.iter().enumerate() {
            let img = open_image(p["file"].as_str().unwrap());
            let params = pipeline_params(p);
            let noise = (params.gnc > 0).then(|| r.f32s(&format!("noise{k}")).1);
            let out = validator::apply_params(&img, &params, noise.as_deref()).unwrap();
            let (max, frac) = diff(&out, &r.rgb(&format!("pre_jpeg{k}")));
            assert_eq!(max, 0, "case {p}: {frac}");
        }
    }

    /// The JPEG step is Pillow's bit for bit: our encoder (libjpeg-turbo's, Pillow's defaults)
    /// writes the bytes Pillow wrote for the same pre-JPEG image, and our decoder returns the
    /// pixels Pillow decoded from them.
    #[test]
    fn jpeg_step_is_pillow_bit_for_bit() {
        let r = Reference::load("pipeline");
        let pil_decoded = r.rgb("decoded0");
        let (_, pil_bytes) = r.raw("jpeg0");
        let ours_decode = validator::decode_jpeg(&pil_bytes).unwrap();
        let (max, frac) = diff(&ours_decode, &pil_decoded);
        assert_eq!(max, 0, "decode of Pillow's JPEG: {frac} of values differ");

        let pre = r.rgb("pre_jpeg0");
        let ours = validator::encode_jpeg(&pre).unwrap();
        assert_eq!(ours.len(), pil_bytes.len(), "encoded sizes differ");
        assert!(ours == pil_bytes, "encoded bytes differ from Pillow's");
        let (max, _) = diff(&validator::decode_jpeg(&ours).unwrap(), &pil_decoded);
        assert_eq!(max, 0);
    }
}

mod sampling {
    use super::*;
    use sv72::augment::validator::{sample_level, sample_params, validator_challenge};
    use sv72::augment::{training_view, AugParams};

    fn cfg() -> AugmentConfig {
        AugmentConfig::default()
    }

    #[test]
    fn challenges_are_deterministic_given_seed() {
        let img = open_image("rgb_640x480.jpg");
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..6)
                .map(|_| validator_challenge(&img, None, &cfg(), &mut rng).unwrap())
                .map(|c| (c.jpeg, c.params))
                .collect::<Vec<_>>()
        };
        let a = run(5);
        assert_eq!(a, run(5));
        assert_ne!(a, run(6));
    }

    #[test]
    fn challenge_shape_and_params() {
        let img = open_image("rgba_257x199.png");
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for level in 0..=3u8 {
            for _ in 0..5 {
                let c = validator_challenge(&img, Some(level), &cfg(), &mut rng).unwrap();
                assert_eq!(c.image.dimensions(), (224, 224));
                assert_eq!(c.level, level);
                assert_eq!(&c.jpeg[..2], &[0xFF, 0xD8], "not a JPEG");
                let p = &c.params;
                assert_eq!(p.level, level);
                assert_eq!(p.angle.is_some(), level > 0);
                if let Some(a) = p.angle {
                    assert!((-20.0..=20.0).contains(&a));
                }
                if let Some(b) = p.crop {
                    assert!(b.i + b.h <= 199 && b.j + b.w <= 257 && b.h == b.w);
                    assert!((b.h * b.w) as f64 >= 0.19 * 257.0 * 199.0 || b.h == 199);
                }
                assert!(!p.hflip && !p.vflip, "faithful mode never flips");
                if level < 2 {
                    assert_eq!((p.cs, p.cc, p.jpeg), (0, 0, 0));
                }
                if level == 2 {
                    assert!(p.cs <= 1 && p.cc <= 1 && p.jpeg <= 1);
                }
                if level < 3 {
                    assert_eq!((p.gnc, p.gb), (0, 0));
                } else {
                    assert!(p.cs.max(p.cc).max(p.jpeg).max(p.gnc).max(p.gb) <= 2);
                }
                let json = serde_json::to_string(p).unwrap();
                let back: AugParams = serde_json::from_str(&json).unwrap();
                assert_eq!(&back, p);
                assert!(p.id().starts_with(&format!("v{level}")));
            }
        }
    }

    #[test]
    fn level_probs_are_respected() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let probs = [0.1, 0.2, 0.3, 0.4];
        let mut counts = [0usize; 4];
        let n = 20_000;
        for _ in 0..n {
            counts[sample_level(&probs, &mut rng) as usize] += 1;
        }
        for (c, p) in counts.iter().zip(probs) {
            let f = *c as f64 / n as f64;
            assert!((f - p).abs() < 0.015, "{counts:?}");
        }
        let mut counts = [0usize; 4];
        for _ in 0..1000 {
            counts[sample_level(&[0.0, 0.0, 1.0, 0.0], &mut rng) as usize] += 1;
        }
        assert_eq!(counts, [0, 0, 1000, 0]);
    }

    #[test]
    fn flips_follow_config() {
        let mut c = cfg();
        c.validator_flips = true;
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let (mut h, mut v) = (0, 0);
        for _ in 0..400 {
            let p = sample_params(300, 200, 1, &c, &mut rng).unwrap();
            h += p.hflip as usize;
            v += p.vflip as usize;
        }
        assert!(
            (150..250).contains(&h) && (150..250).contains(&v),
            "{h} {v}"
        );
        // A flipped challenge is the mirror of the unflipped one before distortions.
        let img = open_image("rgb_300x500.png");
        let mut p = sample_params(300, 500, 1, &c, &mut rng).unwrap();
        p.hflip = false;
        p.vflip = false;
        let a = sv72::augment::apply_params(&img, &p, None).unwrap();
        p.hflip = true;
        let b = sv72::augment::apply_params(&img, &p, None).unwrap();
        assert_eq!(image::imageops::flip_horizontal(&a), b);
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let img = open_image("rgb_37x53.png");
        let err = validator_challenge(&img, Some(4), &cfg(), &mut rng).unwrap_err();
        assert!(format!("{err:#}").contains("level 4"), "{err:#}");
        let empty = DynamicImage::new_rgb8(0, 0);
        assert!(validator_challenge(&empty, Some(1), &cfg(), &mut rng).is_err());
        let mut p = sample_params(37, 53, 1, &cfg(), &mut rng).unwrap();
        p.crop = Some(sv72::augment::CropBox {
            i: 40,
            j: 0,
            h: 20,
            w: 20,
        });
        let err = sv72::augment::apply_params(&img, &p, None).unwrap_err();
        assert!(format!("{err:#}").contains("does not fit"), "{err:#}");
    }

    #[test]
    fn training_views_mix_levels_and_weather() {
        let img = open_image("rgb_300x500.png");
        let mut c = cfg();
        c.weather_prob = 0.5;
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut weather = 0;
        let mut levels = [0usize; 4];
        for _ in 0..40 {
            let (v, id) = training_view(&img, &c, &mut rng).unwrap();
            assert_eq!(v.dimensions(), (224, 224));
            weather += id.contains('+') as usize;
            levels[id[1..2].parse::<usize>().unwrap()] += 1;
        }
        assert!((8..=32).contains(&weather), "{weather}");
        assert!(levels.iter().all(|&n| n > 0), "{levels:?}");
        let mut r1 = ChaCha8Rng::seed_from_u64(4);
        let mut r2 = ChaCha8Rng::seed_from_u64(4);
        assert_eq!(
            training_view(&img, &c, &mut r1).unwrap(),
            training_view(&img, &c, &mut r2).unwrap()
        );
    }

    #[test]
    fn contact_sheet_layout_and_file() {
        let imgs = vec![
            open_image("rgb_640x480.jpg"),
            open_image("gray_180x240.png"),
        ];
        let sheet = sv72::augment::contact_sheet(&imgs, 3, &cfg(), 1);
        let tile = sv72::augment::preview::TILE;
        assert_eq!(sheet.height(), 5 * (tile + 2));
        assert!(sheet.width() >= 3 * tile);
        assert_eq!(sheet, sv72::augment::contact_sheet(&imgs, 3, &cfg(), 1));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/sheet.png");
        sv72::augment::write_contact_sheet(&path, &imgs, 2, &cfg(), 1).unwrap();
        let back = image::open(&path).unwrap().to_rgb8();
        assert_eq!(back, sv72::augment::contact_sheet(&imgs, 2, &cfg(), 1));
    }
}

mod weather {
    use super::*;
    use sv72::augment::{WeatherKind, WeatherOp};

    fn base() -> RgbImage {
        open_image("rgb_300x500.png").to_rgb8()
    }

    fn stats(img: &RgbImage) -> (f64, f64) {
        let v: Vec<f64> = img.as_raw().iter().map(|&x| x as f64).collect();
        let m = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64;
        (m, var.sqrt())
    }

    fn op(kind: WeatherKind, severity: f32) -> WeatherOp {
        WeatherOp {
            kind,
            severity,
            seed: 17,
        }
    }

    #[test]
    fn every_op_is_deterministic_and_keeps_size() {
        let img = base();
        for kind in WeatherKind::ALL {
            let a = op(kind, 0.7).apply(&img).unwrap();
            assert_eq!(a.dimensions(), img.dimensions());
            assert_eq!(a, op(kind, 0.7).apply(&img).unwrap(), "{kind:?}");
            assert_ne!(a, img, "{kind:?} changed nothing");
        }
        assert!(op(WeatherKind::Fog, 1.5).apply(&img).is_err());
    }

    #[test]
    fn fog_lowers_contrast_and_raises_mean() {
        let img = base();
        let (m0, s0) = stats(&img);
        let (m1, s1) = stats(&op(WeatherKind::Fog, 0.5).apply(&img).unwrap());
        let (m2, s2) = stats(&op(WeatherKind::Fog, 1.0).apply(&img).unwrap());
        assert!(m1 > m0 && m2 > m1, "{m0} {m1} {m2}");
        assert!(s1 < s0 && s2 < s1, "{s0} {s1} {s2}");
    }

    #[test]
    fn night_darkens_more_with_severity() {
        let img = base();
        let (m0, _) = stats(&img);
        let (m1, _) = stats(&op(WeatherKind::Night, 0.3).apply(&img).unwrap());
        let (m2, _) = stats(&op(WeatherKind::Night, 0.9).apply(&img).unwrap());
        assert!(m1 < m0 * 0.85 && m2 < m1 * 0.7, "{m0} {m1} {m2}");
    }

    #[test]
    fn motion_blur_keeps_mean_and_smooths() {
        let img = base();
        let out = op(WeatherKind::MotionBlur, 0.8).apply(&img).unwrap();
        let (m0, _) = stats(&img);
        let (m1, _) = stats(&out);
        assert!((m0 - m1).abs() < 1.0, "{m0} {m1}");
        // Horizontal neighbour differences shrink.
        let grad = |im: &RgbImage| -> f64 {
            let r = im.as_raw();
            r.windows(4).map(|w| w[0].abs_diff(w[3]) as f64).sum()
        };
        assert!(grad(&out) < 0.6 * grad(&img));
    }

    #[test]
    fn rain_and_dirt_are_local() {
        let img = base();
        for (kind, max_frac) in [(WeatherKind::Rain, 0.99), (WeatherKind::LensDirt, 0.99)] {
            let out = op(kind, 0.6).apply(&img).unwrap();
            let (m0, _) = stats(&img);
            let (m1, _) = stats(&out);
            assert!((m0 - m1).abs() < 40.0, "{kind:?}: {m0} -> {m1}");
            let changed = img
                .as_raw()
                .iter()
                .zip(out.as_raw())
                .filter(|(a, b)| a.abs_diff(**b) > 20)
                .count() as f64
                / img.as_raw().len() as f64;
            assert!(changed > 0.001 && changed < max_frac, "{kind:?}: {changed}");
        }
        // Dirt darkens: the darkest pixels get darker on average where blobs sit.
        let out = op(WeatherKind::LensDirt, 1.0).apply(&img).unwrap();
        assert!(stats(&out).0 < stats(&img).0 + 5.0);
    }
}
