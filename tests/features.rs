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
        // 6 images × 4 configs (the reference converts RGBA to RGB first, as the pipeline does).
        assert_eq!(checked, 24, "{}", report.join("\n"));
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

/// A small honest extractor: features are per-channel statistics of `pixel_values`, so they
/// depend on every pixel and on the preprocessing, and differ between images.
mod stats_model {
    use burn::tensor::{backend::Backend, Tensor};
    use sv72::model::{BackboneOutput, FeatureExtractor};

    pub struct Stats;

    impl<B: Backend> FeatureExtractor<B> for Stats {
        fn extract(&self, x: Tensor<B, 4>, _want_hidden: bool) -> BackboneOutput<B> {
            let [n, c, _, _] = x.dims();
            let mean = x.clone().mean_dim(2).mean_dim(3).reshape([n, c]);
            let max = x.clone().max_dim(2).max_dim(3).reshape([n, c]);
            let cls = Tensor::cat(vec![mean.clone(), max.clone()], 1);
            let pooler = cls.clone().tanh();
            let patch_mean = Tensor::cat(vec![max, mean.mul_scalar(2.0)], 1);
            BackboneOutput {
                cls,
                pooler,
                patch_mean,
                last_hidden_state: None,
            }
        }
        fn hidden_size(&self) -> usize {
            6
        }
        fn patch_size(&self) -> usize {
            1
        }
    }
}

mod cache {
    use sv72::features::{FeatureCache, FeatureRow};

    fn row(seed: f32) -> FeatureRow {
        FeatureRow {
            cls: vec![seed, seed + 1.0, seed + 2.0],
            pooler: vec![-seed; 3],
            patch_mean: vec![seed * 0.5; 3],
        }
    }

    fn put(c: &mut FeatureCache, img: &str, aug: &str, seed: f32) {
        c.put_many(&[(img.into(), aug.into(), row(seed))]).unwrap();
    }

    #[test]
    fn hit_after_put_and_keys_are_separate() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = FeatureCache::open(dir.path(), "bb-a", "validator-x").unwrap();
        assert!(c.get("img1", "none").is_none());
        c.put_many(&[
            ("img1".into(), "none".into(), row(1.0)),
            ("img1".into(), "aug7".into(), row(2.0)),
            ("img2".into(), "none".into(), row(3.0)),
        ])
        .unwrap();
        assert_eq!(c.get("img1", "none"), Some(row(1.0)));
        assert_eq!(c.get("img1", "aug7"), Some(row(2.0)));
        assert_eq!(c.get("img2", "none"), Some(row(3.0)));
        assert!(c.get("img2", "aug7").is_none());
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.entries, s.segments), (3, 2, 3, 1));
        // Another backbone or preprocessing sees nothing.
        let other_bb = FeatureCache::open(dir.path(), "bb-b", "validator-x").unwrap();
        assert!(other_bb.get("img1", "none").is_none());
        let other_pp = FeatureCache::open(dir.path(), "bb-a", "processor-y").unwrap();
        assert!(other_pp.get("img1", "none").is_none());
        // Reopening reads what was written; a width change is refused.
        let mut again = FeatureCache::open(dir.path(), "bb-a", "validator-x").unwrap();
        assert_eq!(again.get("img1", "aug7"), Some(row(2.0)));
        let wide = FeatureRow {
            cls: vec![0.0; 4],
            pooler: vec![0.0; 4],
            patch_mean: vec![0.0; 4],
        };
        let err = again
            .put_many(&[("x".into(), "none".into(), wide)])
            .unwrap_err();
        assert!(err.to_string().contains("width"), "{err}");
        assert!(FeatureCache::open(dir.path(), "../up", "p").is_err());
    }

    #[test]
    fn interrupted_write_leaves_no_partial_entry() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = FeatureCache::open(dir.path(), "bb-a", "p").unwrap();
        put(&mut c, "good", "none", 1.0);
        let seg_dir = c.dir().to_path_buf();
        let seg = c.segment_paths()[0].to_path_buf();
        drop(c);
        // A crash mid-write leaves a temp file (never renamed) — simulate one holding a truncated
        // copy of a real segment, plus a truncated file that does carry a segment name.
        let bytes = std::fs::read(&seg).unwrap();
        std::fs::write(seg_dir.join(".sv72-tmp-crash"), &bytes[..bytes.len() / 2]).unwrap();
        std::fs::write(
            seg_dir.join("seg-zzzz-truncated.safetensors"),
            &bytes[..bytes.len() - 7],
        )
        .unwrap();
        let mut c = FeatureCache::open(dir.path(), "bb-a", "p").unwrap();
        assert_eq!(c.stats().entries, 1, "only the complete segment counts");
        assert_eq!(c.get("good", "none"), Some(row(1.0)));
        put(&mut c, "later", "none", 5.0);
        let c = FeatureCache::open(dir.path(), "bb-a", "p").unwrap();
        assert_eq!(c.get("later", "none"), Some(row(5.0)));
    }

    #[test]
    fn backbone_key_tracks_weights_and_config() {
        let dir = tempfile::tempdir().unwrap();
        let snap = dir.path().join("snap");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(snap.join("config.json"), br#"{"model_type":"dinov2"}"#).unwrap();
        let write_weights = |v: f32| {
            let data: Vec<u8> = bytemuck::cast_slice(&[v, 2.0]).to_vec();
            let t = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &data)
                .unwrap();
            let bytes = safetensors::serialize(vec![("w", t)], None).unwrap();
            std::fs::write(snap.join("model.safetensors"), bytes).unwrap();
        };
        write_weights(1.0);
        let root = dir.path().join("cache");
        let k1 = sv72::features::backbone_key(&snap, &root).unwrap();
        assert_eq!(k1, sv72::features::backbone_key(&snap, &root).unwrap());
        assert!(root.join("weights-hashes.json").is_file());
        // Same header and size, different values: a different key.
        std::thread::sleep(std::time::Duration::from_millis(20));
        write_weights(3.0);
        let k2 = sv72::features::backbone_key(&snap, &root).unwrap();
        assert_ne!(k1, k2);
        std::fs::write(snap.join("config.json"), br#"{"model_type":"dinov3_vit"}"#).unwrap();
        assert_ne!(k2, sv72::features::backbone_key(&snap, &root).unwrap());
    }
}

mod compute {
    use std::path::Path;

    use sv72::backend::Cpu;
    use sv72::features::embed::{compute_features, NO_AUG};
    use sv72::features::FeatureCache;
    use sv72::model::preprocess::Preprocess;

    use super::stats_model::Stats;

    #[test]
    fn computes_misses_once_and_serves_hits() {
        let imgs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images");
        let files = ["rgb_640x480.jpg", "rgb_37x53.png", "gray_180x240.png"];
        let keys: Vec<(String, String)> = files
            .iter()
            .map(|f| (f.to_string(), NO_AUG.to_string()))
            .chain([("rgb_37x53.png".to_string(), "flip".to_string())])
            .chain([("broken".to_string(), NO_AUG.to_string())])
            .collect();
        let load = |i: usize| -> anyhow::Result<image::DynamicImage> {
            if keys[i].0 == "broken" {
                anyhow::bail!("cannot decode");
            }
            let img = image::open(imgs.join(&keys[i].0))?;
            Ok(if keys[i].1 == "flip" {
                img.fliph()
            } else {
                img
            })
        };
        let pre = Preprocess::validator(56, [0.5; 3], [0.25; 3]);
        let dir = tempfile::tempdir().unwrap();
        let mut cache = FeatureCache::open(dir.path(), "bb-t", &pre.id()).unwrap();
        let dev = Default::default();
        let a =
            compute_features::<Cpu, _, _>(&Stats, &dev, &keys, load, &pre, 2, &mut cache).unwrap();
        assert_eq!((a.cache_hits, a.computed), (0, 4));
        assert_eq!(a.failed.len(), 1);
        assert_eq!(a.failed[0].0, 4);
        // Row 0 equals a direct computation on the same pixels.
        let px = pre
            .pixel_values(&image::open(imgs.join(files[0])).unwrap())
            .unwrap();
        let n = px.len() / 3;
        let mean_r: f32 = px[..n].iter().sum::<f32>() / n as f32;
        let r0 = a.rows[0].as_ref().unwrap();
        assert!(
            (r0.cls[0] - mean_r).abs() < 1e-4,
            "{} vs {mean_r}",
            r0.cls[0]
        );
        assert_eq!(r0.cls.len(), 6);
        // Different images and views give different features; a flip keeps channel means.
        assert_ne!(a.rows[0], a.rows[1]);
        let (v, f) = (a.rows[1].as_ref().unwrap(), a.rows[3].as_ref().unwrap());
        assert!((v.cls[0] - f.cls[0]).abs() < 1e-3);
        // Second pass: everything valid comes from the cache, nothing recomputed.
        let b =
            compute_features::<Cpu, _, _>(&Stats, &dev, &keys, load, &pre, 2, &mut cache).unwrap();
        assert_eq!((b.cache_hits, b.computed), (4, 0));
        for i in 0..4 {
            assert_eq!(a.rows[i], b.rows[i]);
        }
    }
}

mod hub {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    use sha2::{Digest, Sha256};
    use sv72::model::hub::{self, FetchOptions};

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn weights_bytes() -> Vec<u8> {
        (0..5000u32).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// Requests seen: (path, lower-cased header lines).
    type Log = Arc<Mutex<Vec<(String, Vec<String>)>>>;

    /// A stand-in Hub on 127.0.0.1 serving `org/tiny`; answers at most `max` connections.
    fn serve(max: usize) -> (String, Log) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let log: Log = Arc::default();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(max) {
                let Ok(mut s) = stream else { continue };
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                        break;
                    }
                    headers.push(h.trim().to_ascii_lowercase());
                }
                log2.lock().unwrap().push((path.clone(), headers.clone()));
                let w = weights_bytes();
                let sha256 = hex::encode(Sha256::digest(&w));
                let info = format!(
                    r#"{{"sha":"{SHA}","siblings":[{{"rfilename":"config.json"}},{{"rfilename":"preprocessor_config.json"}},{{"rfilename":"model.safetensors"}},{{"rfilename":"pytorch_model.bin"}}]}}"#
                );
                let range_from: usize = headers
                    .iter()
                    .find_map(|h| h.strip_prefix("range: bytes="))
                    .and_then(|v| v.trim_end_matches('-').parse().ok())
                    .unwrap_or(0);
                let (status, extra, body): (&str, String, Vec<u8>) = match path.as_str() {
                    "/api/models/org/tiny/revision/main" => ("200 OK", String::new(), info.into_bytes()),
                    "/api/models/org/private/revision/main" => ("401 Unauthorized", String::new(), b"{}".to_vec()),
                    p if p == format!("/org/tiny/resolve/{SHA}/config.json") => (
                        "200 OK",
                        "ETag: \"1111111111111111111111111111111111111111\"\r\n".into(),
                        br#"{"model_type":"dinov2"}"#.to_vec(),
                    ),
                    p if p == format!("/org/tiny/resolve/{SHA}/preprocessor_config.json") => {
                        ("200 OK", String::new(), br#"{"image_processor_type":"BitImageProcessor"}"#.to_vec())
                    }
                    p if p == format!("/org/tiny/resolve/{SHA}/model.safetensors") => (
                        "302 Found",
                        format!("Location: /cdn/blob\r\nX-Linked-Etag: \"{sha256}\"\r\nX-Linked-Size: {}\r\n", w.len()),
                        Vec::new(),
                    ),
                    "/cdn/blob" if range_from > 0 => (
                        "206 Partial Content",
                        format!("Content-Range: bytes {range_from}-{}/{}\r\n", w.len() - 1, w.len()),
                        w[range_from..].to_vec(),
                    ),
                    "/cdn/blob" => ("200 OK", String::new(), w),
                    _ => ("404 Not Found", String::new(), b"Entry not found".to_vec()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(&body);
                let _ = s.flush();
                let mut sink = Vec::new();
                let _ = r.read_to_end(&mut sink);
            }
        });
        (addr, log)
    }

    fn opts(endpoint: &str, cache: &Path, token: Option<&str>) -> FetchOptions {
        FetchOptions {
            endpoint: endpoint.to_string(),
            token: token.map(String::from),
            revision: "main".into(),
            cache_dir: cache.to_path_buf(),
            progress: false,
        }
    }

    #[test]
    fn fetch_resume_and_resolve() {
        let (endpoint, log) = serve(20);
        let dir = tempfile::tempdir().unwrap();
        let repo_dir = dir.path().join("models--org--tiny");
        // A partial download from an earlier, interrupted run.
        let partial = hub::partial_download_path(&repo_dir, SHA, "model.safetensors");
        std::fs::create_dir_all(partial.parent().unwrap()).unwrap();
        std::fs::write(&partial, &weights_bytes()[..1234]).unwrap();

        let rep = hub::fetch("org/tiny", &opts(&endpoint, dir.path(), Some("tok-123"))).unwrap();
        assert_eq!(rep.commit, SHA);
        let snap = repo_dir.join("snapshots").join(SHA);
        assert_eq!(rep.snapshot, snap);
        assert_eq!(
            std::fs::read(snap.join("model.safetensors")).unwrap(),
            weights_bytes()
        );
        assert!(snap.join("preprocessor_config.json").is_file());
        assert!(!snap.join("pytorch_model.bin").exists());
        assert!(!partial.exists());
        assert_eq!(
            std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
            SHA
        );
        let sha256 = hex::encode(Sha256::digest(weights_bytes()));
        assert!(
            repo_dir.join("blobs").join(&sha256).is_file(),
            "blob named by its sha256"
        );
        {
            let log = log.lock().unwrap();
            let get = |p: &str| log.iter().find(|(q, _)| q == p).map(|(_, h)| h.clone());
            let api = get("/api/models/org/tiny/revision/main").unwrap();
            assert!(
                api.contains(&"authorization: bearer tok-123".to_string()),
                "{api:?}"
            );
            let cdn = get("/cdn/blob").unwrap();
            assert!(
                cdn.contains(&"range: bytes=1234-".to_string()),
                "resumed: {cdn:?}"
            );
            assert!(!log.iter().any(|(p, _)| p.contains("pytorch_model.bin")));
        }
        // A second fetch downloads nothing.
        let again = hub::fetch("org/tiny", &opts(&endpoint, dir.path(), None)).unwrap();
        assert!(again.files.iter().all(|(_, _, downloaded)| !downloaded));

        // Resolution: by ref, by commit hash, and a clear error for a missing revision / model.
        assert_eq!(
            hub::resolve_in_cache(dir.path(), "org/tiny", "main").unwrap(),
            snap
        );
        assert_eq!(
            hub::resolve_in_cache(dir.path(), "org/tiny", SHA).unwrap(),
            snap
        );
        let e = hub::resolve_in_cache(dir.path(), "org/tiny", "v2")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("v2") && e.contains("fetch-backbone org/tiny --revision v2"),
            "{e}"
        );
        let e = hub::resolve_in_cache(dir.path(), "org/other", "main")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("models--org--other") && e.contains("sv72 fetch-backbone org/other"),
            "{e}"
        );
    }

    #[test]
    fn errors_are_clear_and_token_is_never_printed() {
        let (endpoint, _log) = serve(10);
        let dir = tempfile::tempdir().unwrap();
        let e = hub::fetch("org/missing", &opts(&endpoint, dir.path(), None)).unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("404") && e.contains("org/missing"), "{e}");
        // Through the binary: 401 with a token set, token only ever in the request header.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sv72"))
            .args(["fetch-backbone", "org/private", "--endpoint", &endpoint])
            .env("HF_HUB_CACHE", dir.path())
            .env("HF_TOKEN", "secret-tok-987")
            .env("SV72_NO_PROGRESS", "1")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(all.contains("401") && all.contains("HF_TOKEN"), "{all}");
        assert!(!all.contains("secret-tok-987"), "token leaked: {all}");
        // And a success through the binary, also without echoing the token.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sv72"))
            .args(["fetch-backbone", "org/tiny", "--endpoint", &endpoint])
            .env("HF_HUB_CACHE", dir.path())
            .env("HF_TOKEN", "secret-tok-987")
            .env("SV72_NO_PROGRESS", "1")
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{all}");
        assert!(
            all.contains(SHA) && !all.contains("secret-tok-987"),
            "{all}"
        );
    }

    #[test]
    fn cli_resolution_uses_hf_hub_cache_and_suggests_fetch() {
        let dir = tempfile::tempdir().unwrap();
        let img = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images/rgb_37x53.png");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sv72"))
            .args([
                "embed",
                "someorg/absent-model",
                img.to_str().unwrap(),
                "--out",
            ])
            .arg(dir.path().join("o.safetensors"))
            .env("HF_HUB_CACHE", dir.path().join("hubcache"))
            .env_remove("HF_HOME")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("hubcache") && err.contains("sv72 fetch-backbone someorg/absent-model"),
            "{err}"
        );
    }
}

mod embed_e2e {
    use std::path::Path;

    use sv72::backend::Cpu;
    use sv72::features::embed::{self, EmbedIndex, EmbedJob};
    use sv72::features::FeatureCache;
    use sv72::model::preprocess::Preprocess;

    use super::stats_model::Stats;

    #[test]
    fn files_folder_manifest_with_bad_input() {
        let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images");
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("imgs");
        std::fs::create_dir_all(folder.join("sub")).unwrap();
        std::fs::copy(fx.join("rgb_300x500.png"), folder.join("sub/b.png")).unwrap();
        std::fs::copy(fx.join("gray_180x240.png"), folder.join("a.png")).unwrap();
        std::fs::write(folder.join("notes.txt"), "not an image").unwrap();
        let bad = dir.path().join("bad.jpg");
        std::fs::write(&bad, b"\xff\xd8 truncated jpeg").unwrap();
        // A manifest with one relative path (under the datasets root).
        let root = dir.path().join("datasets");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::copy(fx.join("rgba_257x199.png"), root.join("m.png")).unwrap();
        let mpath = dir.path().join("manifest.parquet");
        let row = sv72::data::manifest::ManifestRow {
            id: "x".into(),
            path: "m.png".into(),
            label: 1,
            source: sv72::data::manifest::SourceKind::Real,
            generator: "test".into(),
            width: 257,
            height: 199,
            format: "png".into(),
            split: sv72::data::manifest::Split::Test,
            phash: 0,
            group: "x".into(),
            ingested_at: "2026-11-24T00:00:00Z".into(),
            origin: "m.png".into(),
            variant_of: None,
            aug: None,
            group_key: None,
            parent: None,
        };
        sv72::data::manifest::write_manifest(&mpath, &[row]).unwrap();

        let mut inputs =
            embed::collect_inputs(&[fx.join("rgb_640x480.jpg"), folder.clone(), bad.clone()])
                .unwrap();
        inputs.extend(embed::manifest_inputs(&mpath, &root).unwrap());
        assert_eq!(inputs.len(), 5, "{inputs:?}");
        let pre = Preprocess::validator(28, [0.5; 3], [0.25; 3]);
        let out = dir.path().join("out/feats.safetensors");
        let job = EmbedJob {
            inputs,
            preprocess: &pre,
            batch_size: 3,
            out: out.clone(),
            dump_pixels: true,
            backbone_name: "stats".into(),
            backbone_key: "bb-stats".into(),
        };
        let mut cache = FeatureCache::open(&dir.path().join("fc"), "bb-stats", &pre.id()).unwrap();
        let dev = Default::default();
        let idx = embed::run_embed::<Cpu, _>(&Stats, &dev, &job, &mut cache).unwrap();
        assert_eq!(idx.computed, 4);
        let json: EmbedIndex =
            serde_json::from_slice(&std::fs::read(embed::index_path(&out)).unwrap()).unwrap();
        assert_eq!(json, idx);
        let names: Vec<String> = json
            .rows
            .iter()
            .map(|r| {
                Path::new(&r.path)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into()
            })
            .collect();
        assert_eq!(names, ["rgb_640x480.jpg", "a.png", "b.png", "m.png"]);
        assert_eq!((json.rows[0].width, json.rows[0].height), (640, 480));
        assert_eq!(
            json.rows[3].id,
            sv72::util::hash::content_hash(&std::fs::read(fx.join("rgba_257x199.png")).unwrap())
        );
        assert_eq!(json.skipped.len(), 1);
        assert!(json.skipped[0].path.ends_with("bad.jpg"));

        let bytes = std::fs::read(&out).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for name in ["cls", "pooler", "patch_mean"] {
            assert_eq!(st.tensor(name).unwrap().shape(), [4, 6]);
        }
        let pv = st.tensor("pixel_values").unwrap();
        assert_eq!(pv.shape(), [4, 3, 28, 28]);
        // Row order: row 2's pixels and cls are those of b.png.
        let want = pre
            .pixel_values(&image::open(folder.join("sub/b.png")).unwrap())
            .unwrap();
        let n = 3 * 28 * 28;
        let got: Vec<f32> = pv.data()[2 * n * 4..3 * n * 4]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(got, want);
        let cls = st.tensor("cls").unwrap();
        let c2 = f32::from_le_bytes(cls.data()[2 * 24..2 * 24 + 4].try_into().unwrap());
        let mean_r = want[..28 * 28].iter().sum::<f32>() / (28.0 * 28.0);
        assert!((c2 - mean_r).abs() < 1e-4);

        // A second run is served from the cache.
        let idx2 = embed::run_embed::<Cpu, _>(&Stats, &dev, &job, &mut cache).unwrap();
        assert_eq!((idx2.cache_hits, idx2.computed), (4, 0));
    }

    /// Only built without the `cuda` feature: in a CUDA build `--device cuda` is a real device.
    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_feature_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let snap = dir.path().join("snap");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(snap.join("config.json"), br#"{"model_type":"dinov2"}"#).unwrap();
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/preprocess/configs/dinov2_224/preprocessor_config.json"),
            snap.join("preprocessor_config.json"),
        )
        .unwrap();
        let w = safetensors::serialize(
            vec![(
                "w",
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &[0u8; 4])
                    .unwrap(),
            )],
            None,
        )
        .unwrap();
        std::fs::write(snap.join("model.safetensors"), w).unwrap();
        let img = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images/rgb_37x53.png");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sv72"))
            .arg("--set")
            .arg(format!(
                "paths.feature_cache={}",
                dir.path().join("fc").display()
            ))
            .args([
                "embed",
                snap.to_str().unwrap(),
                img.to_str().unwrap(),
                "--device",
                "cuda",
                "--out",
            ])
            .arg(dir.path().join("o.safetensors"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--features cuda"), "{err}");
    }
}
