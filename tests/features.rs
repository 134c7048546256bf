//! Preprocessing parity, HF hub resolution and download, the feature cache, and `sv72 embed`.

mod preprocess_parity {
    use std::path::{Path, PathBuf};

    use safetensors::SafeTensors;
    use sv72::model::preprocess::Preprocess;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    const CONFIGS: [&str; 4] = ["dinov2_224", "dinov2_98", "dinov3_224", "dinov3_112"];

    /// Reference `pixel_values` from the fixture: stored f32, or uint8 to normalise (see
    /// tools/preprocess_reference.py).
    fn reference(st: &SafeTensors, cfg: &str, pre: &Preprocess) -> Option<(Vec<f32>, Vec<usize>)> {
        if let Ok(t) = st.tensor(cfg) {
            let v = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            return Some((v, t.shape().to_vec()));
        }
        let t = st.tensor(&format!("{cfg}.u8")).ok()?;
        let (mean, std) = pre.normalize.expect("BiT configs normalise");
        let n = t.shape()[1] * t.shape()[2];
        let v = t
            .data()
            .iter()
            .enumerate()
            .map(|(i, &u)| {
                let c = i / n;
                (u as f32 - mean[c] * 255.0) / (std[c] * 255.0)
            })
            .collect();
        Some((v, t.shape().to_vec()))
    }

    /// Every fixture image × processor config: equal to transformers' AutoImageProcessor.
    #[test]
    fn pixel_values_match_transformers() {
        let mut checked = 0;
        let mut report = Vec::new();
        for entry in std::fs::read_dir(fixtures().join("images")).unwrap() {
            let path = entry.unwrap().path();
            let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
            let bytes = std::fs::read(fixtures().join(format!("preprocess/{stem}.safetensors")))
                .unwrap_or_else(|_| panic!("no reference for {stem}"));
            let st = SafeTensors::deserialize(&bytes).unwrap();
            let img = image::open(&path).unwrap();
            // JPEG decoders may differ by a level; feed PIL's decoded pixels to test the
            // preprocessing itself (decoder agreement is checked separately).
            let img = match st.tensor("decoded") {
                Ok(t) => {
                    let (h, w) = (t.shape()[0] as u32, t.shape()[1] as u32);
                    image::DynamicImage::ImageRgb8(
                        image::RgbImage::from_raw(w, h, t.data().to_vec()).unwrap(),
                    )
                }
                Err(_) => img,
            };
            for cfg in CONFIGS {
                let pre = Preprocess::from_snapshot(
                    &fixtures().join(format!("preprocess/configs/{cfg}")),
                )
                .unwrap();
                let Some((want, shape)) = reference(&st, cfg, &pre) else {
                    continue;
                };
                let got = pre.pixel_values(&img).unwrap();
                let (oh, ow) = pre.output_size(img.width(), img.height());
                assert_eq!(vec![3, oh as usize, ow as usize], shape, "{stem} {cfg}");
                assert_eq!(got.len(), want.len());
                let max = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                report.push(format!("{stem} {cfg}: max |d| = {max:.2e}"));
                checked += 1;
            }
        }
        let bad: Vec<_> = report
            .iter()
            .filter(|l| {
                let v: f32 = l.rsplit(' ').next().unwrap().parse().unwrap();
                v > 1e-4
            })
            .collect();
        eprintln!("{}", report.join("\n"));
        assert!(bad.is_empty(), "{bad:#?}");
        // 6 images × 4 configs, less RGBA × 2 DINOv3 configs (transformers itself fails there).
        assert_eq!(checked, 22, "{}", report.join("\n"));
    }

    /// The image crate's JPEG decoder (zune-jpeg) against PIL's (libjpeg-turbo) on the fixture
    /// JPEGs. They are not bit-identical (chroma upsampling / IDCT rounding): measured max 4
    /// levels on the 4:2:0 640x480 fixture. The bound guards against a real decoding bug
    /// (wrong colour space, shifted rows), which would differ by far more.
    #[test]
    fn jpeg_decoding_close_to_pil() {
        for stem in ["rgb_640x480", "rgb_224x224"] {
            let bytes =
                std::fs::read(fixtures().join(format!("preprocess/{stem}.safetensors"))).unwrap();
            let st = SafeTensors::deserialize(&bytes).unwrap();
            let pil = st.tensor("decoded").unwrap();
            let ours = image::open(fixtures().join(format!("images/{stem}.jpg")))
                .unwrap()
                .to_rgb8();
            let diffs: Vec<i32> = ours
                .as_raw()
                .iter()
                .zip(pil.data())
                .map(|(a, b)| (*a as i32 - *b as i32).abs())
                .collect();
            let max = diffs.iter().max().copied().unwrap();
            let n = diffs.iter().filter(|d| **d > 0).count();
            eprintln!(
                "{stem}: max |d| = {max}, {n} of {} values differ",
                diffs.len()
            );
            let mean = diffs.iter().map(|d| *d as f64).sum::<f64>() / diffs.len() as f64;
            assert!(
                max <= 6 && mean < 0.5,
                "{stem}: decoders differ by {max} levels (mean {mean})"
            );
        }
    }
}
