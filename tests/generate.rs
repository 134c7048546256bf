//! `sv72 generate` against stand-ins of the three servers on 127.0.0.1 (A1111, the OpenAI images
//! API, ComfyUI), each checking the request shape and answering with generated PNGs, with
//! injected 429/500/503 answers and timeouts; resume after a kill; the CSV ingested, with i2i
//! children in their parent's split.

use crate::common::http::{self as standin, resp, resp_json, Req, Resp};

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use image::{ImageFormat, Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use sv72::config::{GenBackend, GenerateConfig, SplitConfig};
use sv72::generate::{self, GenerateRequest, Record, Secret};

/// A noise picture fixed by `seed` (noise, so that no two are pHash near duplicates).
fn png(seed: u64, w: u32, h: u32) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let img = RgbImage::from_fn(w, h, |_, _| Rgb([rng.random(), rng.random(), rng.random()]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn config(backend: GenBackend, base: &str) -> GenerateConfig {
    GenerateConfig {
        backend,
        endpoint: Some(base.to_string()),
        width: 64,
        height: 48,
        steps: 7,
        timeout_s: 1,
        attempts: 4,
        backoff_ms: 5,
        max_backoff_ms: 40,
        concurrency: 2,
        ..Default::default()
    }
}

fn read_csv(path: &Path) -> Vec<Record> {
    csv::Reader::from_path(path)
        .unwrap()
        .deserialize()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Three prompts: t2i roadwork (seed 11), i2i none from `src` (seed 22, strength 0.3), and one
/// with neither seed nor image.
fn write_prompts(dir: &Path, src: &Path) -> PathBuf {
    let p = dir.join("prompts.jsonl");
    let lines = [
        json!({"id": "p1", "prompt": "a road with cones", "label": "roadwork", "seed": 11,
               "negative_prompt": "text, watermark"}),
        json!({"id": "p2", "prompt": "an empty street", "label": "none", "seed": 22,
               "image": src.display().to_string(), "strength": 0.3, "label_known": true}),
        json!({"id": "p3", "prompt": "a barrier at dusk", "label": 1}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&p, text).unwrap();
    p
}

/// Failures the stand-ins inject once per route.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Inject {
    Status(u16),
    /// Answer after this long (longer than the client's timeout).
    Slow(Duration),
    /// Do the work, then answer 500 (the answer is lost).
    LostAnswer,
}

#[derive(Default)]
struct Log {
    /// (route, seed or id) per request, in arrival order.
    calls: Vec<(String, String)>,
    problems: Vec<String>,
    inject: HashMap<String, Vec<Inject>>,
}

impl Log {
    fn take_injection(&mut self, route: &str) -> Option<Inject> {
        let v = self.inject.get_mut(route)?;
        (!v.is_empty()).then(|| v.remove(0))
    }
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.problems.push(what.into());
        }
    }
}

fn injected(i: Inject) -> Option<Resp> {
    match i {
        Inject::Status(429) => {
            let mut r = resp_json(429, json!({"error": {"message": "slow down"}}));
            r.headers.push(("Retry-After".into(), "0".into()));
            Some(r)
        }
        Inject::Status(s) => Some(resp_json(
            s,
            json!({"error": {"message": format!("injected {s}")}}),
        )),
        Inject::Slow(d) => {
            std::thread::sleep(d);
            None
        }
        Inject::LostAnswer => None,
    }
}

mod a1111 {
    use super::*;

    /// The A1111 API: checks each request, answers `images` + `info` (a JSON string).
    fn server(log: Arc<Mutex<Log>>, src: Vec<u8>, delay: Duration) -> String {
        standin::start(Arc::new(move |r: &Req| {
            std::thread::sleep(delay);
            let route = r.path.clone();
            let v = r.json();
            let mut l = log.lock().unwrap();
            l.calls.push((route.clone(), v["seed"].to_string()));
            if let Some(i) = l.take_injection(&route) {
                drop(l);
                if let Some(resp) = injected(i) {
                    return resp;
                }
                l = log.lock().unwrap();
            }
            let n = v["batch_size"].as_u64().unwrap_or(0);
            let seed = v["seed"].as_u64().unwrap_or(u64::MAX);
            l.check(r.method == "POST", format!("{route}: method {}", r.method));
            l.check(
                v["prompt"].as_str().is_some_and(|s| !s.is_empty()),
                format!("{route}: no prompt"),
            );
            l.check(
                v["negative_prompt"].is_string(),
                format!("{route}: no negative_prompt"),
            );
            l.check(
                v["n_iter"] == json!(1) && (1..=2).contains(&n),
                format!("{route}: batch {v}"),
            );
            l.check(
                v["steps"] == json!(7) && v["cfg_scale"] == json!(7.0),
                format!("{route}: steps/cfg {v}"),
            );
            l.check(
                v["send_images"] == json!(true),
                format!("{route}: send_images"),
            );
            l.check(
                seed < 1 << 31,
                format!("{route}: seed {seed} too large for A1111"),
            );
            match route.as_str() {
                "/sdapi/v1/txt2img" => {
                    l.check(
                        v["width"] == json!(64) && v["height"] == json!(48),
                        format!("txt2img size {v}"),
                    );
                    l.check(v.get("init_images").is_none(), "txt2img with init_images");
                }
                "/sdapi/v1/img2img" => {
                    let init = v["init_images"][0].as_str().map(unb64);
                    l.check(
                        init.as_deref() == Some(&src[..]),
                        "img2img: init_images[0] is not the source image",
                    );
                    l.check(
                        v["denoising_strength"] == json!(0.3),
                        format!("img2img strength {}", v["denoising_strength"]),
                    );
                    // Source 40x30 scaled to the long side 64, multiples of 8.
                    l.check(
                        v["width"] == json!(64) && v["height"] == json!(48),
                        format!("img2img size {v}"),
                    );
                }
                other => {
                    l.problems.push(format!("unexpected route {other}"));
                    return resp(404, "not found");
                }
            }
            let images: Vec<String> = (0..n).map(|i| b64(&png(seed + i, 64, 48))).collect();
            let info = json!({"all_seeds": (0..n).map(|i| seed + i).collect::<Vec<_>>(),
                              "sd_model_name": "sdxl-test"});
            resp_json(
                200,
                json!({"images": images, "parameters": {}, "info": info.to_string()}),
            )
        }))
    }

    #[test]
    fn t2i_and_i2i_with_retries_seeds_and_parents() {
        let d = tempfile::tempdir().unwrap();
        let src_bytes = png(500, 40, 30);
        let src = d.path().join("src.png");
        std::fs::write(&src, &src_bytes).unwrap();
        let prompts = write_prompts(d.path(), &src);
        let log = Arc::new(Mutex::new(Log::default()));
        log.lock().unwrap().inject = HashMap::from([
            (
                "/sdapi/v1/txt2img".to_string(),
                vec![Inject::Status(500), Inject::Status(429)],
            ),
            // Longer than timeout_s = 1: the client gives up and asks again.
            (
                "/sdapi/v1/img2img".to_string(),
                vec![Inject::Slow(Duration::from_millis(1600))],
            ),
        ]);
        let base = server(log.clone(), src_bytes.clone(), Duration::ZERO);
        let mut cfg = config(GenBackend::A1111, &base);
        cfg.images_per_prompt = 2;
        cfg.batch = 2;
        cfg.model = Some("sdxl-test".into());
        let out = d.path().join("out");
        let req = GenerateRequest {
            prompts,
            out: out.clone(),
            label: None,
            limit: None,
        };
        let t = Instant::now();
        let r = generate::run(&req, &cfg, None).unwrap();
        assert!(t.elapsed() < Duration::from_secs(20));
        let l = log.lock().unwrap();
        assert!(l.problems.is_empty(), "{:#?}", l.problems);
        assert!(r.failures.is_empty(), "{:?}", r.failures);
        assert_eq!((r.generated, r.planned, r.total_rows), (6, 6, 6));
        // 3 requests of 2 images, plus 3 injected failures that were retried.
        assert_eq!(l.calls.len(), 6, "{:?}", l.calls);

        let rows = read_csv(&out.join(generate::CSV_FILE));
        assert_eq!(rows.len(), 6);
        let of = |id: &str| {
            rows.iter()
                .filter(|r| r.prompt_id == id)
                .collect::<Vec<_>>()
        };
        let p1 = of("p1");
        assert_eq!(
            p1.iter().map(|r| r.seed).collect::<Vec<_>>(),
            [Some(11), Some(12)]
        );
        assert!(p1
            .iter()
            .all(|r| r.mode == generate::JobMode::T2i && r.parent.is_none()));
        assert!(p1
            .iter()
            .all(|r| r.label == "roadwork" && r.source == "synthetic"));
        assert_eq!(p1[0].generator, "a1111/sdxl-test");
        let p2 = of("p2");
        let parent = sv72::util::hash::content_hash(&src_bytes);
        assert!(p2.iter().all(|r| r.mode == generate::JobMode::I2i
            && r.parent.as_deref() == Some(parent.as_str())
            && r.strength == Some(0.3)
            && r.label == "none"));
        assert_eq!(
            p2.iter().map(|r| r.seed).collect::<Vec<_>>(),
            [Some(22), Some(23)]
        );
        let p3 = of("p3");
        let s3 = generate::base_seed(
            &generate::read_prompts(&req.prompts, None).unwrap()[2],
            cfg.seed,
        );
        assert_eq!(p3[0].seed, Some(s3));
        // Each file is the image the server made for its seed.
        for row in &rows {
            let bytes = std::fs::read(out.join(&row.path)).unwrap();
            assert_eq!(bytes, png(row.seed.unwrap(), 64, 48), "{}", row.path);
            assert_eq!((row.width, row.height), (64, 48));
        }
        drop(l);

        // A second run has nothing left to do and asks for nothing.
        let again = generate::run(&req, &cfg, None).unwrap();
        assert_eq!((again.generated, again.skipped_done), (0, 6));
        assert_eq!(log.lock().unwrap().calls.len(), 6);
        assert_eq!(read_csv(&out.join(generate::CSV_FILE)), rows);
    }

    /// Resume after a kill: the binary is killed part way, the re-run asks only for the rest.
    #[test]
    fn resume_after_kill() {
        let d = tempfile::tempdir().unwrap();
        let list = d.path().join("list.txt");
        let text: String = (0..10)
            .map(|i| format!("roadside scene number {i}\n"))
            .collect();
        std::fs::write(&list, text).unwrap();
        let log = Arc::new(Mutex::new(Log::default()));
        let base = server(log.clone(), Vec::new(), Duration::from_millis(250));
        let out = d.path().join("out");
        let run = || {
            let mut c = Command::new(env!("CARGO_BIN_EXE_sv72"));
            c.current_dir(d.path())
                .env("SV72_NO_PROGRESS", "1")
                .args([
                    "--set",
                    "generate.steps=7",
                    "--set",
                    "generate.width=64",
                    "--set",
                    "generate.height=48",
                ])
                .args([
                    "generate",
                    "--backend",
                    "a1111",
                    "--endpoint",
                    &base,
                    "--prompts",
                ])
                .arg(&list)
                .args(["--label", "none", "--concurrency", "1", "--out"])
                .arg(&out);
            c
        };
        let journal = out.join(generate::JOURNAL_FILE);
        let lines = || std::fs::read_to_string(&journal).map_or(0, |t| t.lines().count());
        let mut child = run().spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while lines() < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let first: Vec<Record> = std::fs::read_to_string(&journal)
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        assert!(
            (3..10).contains(&first.len()),
            "killed after {} images",
            first.len()
        );
        let done_seeds: HashSet<String> =
            first.iter().map(|r| r.seed.unwrap().to_string()).collect();
        // A line cut by the kill must not break the next run.
        let mut j = std::fs::OpenOptions::new()
            .append(true)
            .open(&journal)
            .unwrap();
        std::io::Write::write_all(&mut j, b"{\"path\":\"images/cut").unwrap();
        log.lock().unwrap().calls.clear();

        let o = run().output().unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(stdout.contains("1 cut journal line"), "{stdout}");
        let l = log.lock().unwrap();
        assert!(l.problems.is_empty(), "{:#?}", l.problems);
        let asked: Vec<&String> = l.calls.iter().map(|c| &c.1).collect();
        assert!(
            asked.iter().all(|s| !done_seeds.contains(*s)),
            "finished prompts asked again: {asked:?}"
        );
        // At most the one request in flight at the kill is repeated.
        assert!(
            asked.len() <= 10 - first.len() + 1,
            "{} requests",
            asked.len()
        );
        let rows = read_csv(&out.join(generate::CSV_FILE));
        assert_eq!(rows.len(), 10);
        assert_eq!(
            rows.iter()
                .map(|r| &r.prompt_id)
                .collect::<BTreeSet<_>>()
                .len(),
            10
        );
        for row in &rows {
            assert!(out.join(&row.path).is_file());
        }
    }

    /// generated.csv goes into ingest as it is; i2i children take their parent's group and split
    /// (the parents are in another dataset), and re-ingesting changes nothing.
    #[test]
    fn csv_ingests_and_children_follow_their_parents() {
        use sv72::data::ingest::{ingest, IngestOptions};
        use sv72::data::manifest::{read_manifest, SourceKind};
        use sv72::data::sources::{SourceSpec, Tag};
        let d = tempfile::tempdir().unwrap();
        let raw = d.path().join("raw");
        let mut parents = Vec::new();
        for i in 0..12u64 {
            let class = if i % 2 == 0 { "roadwork" } else { "none" };
            let p = raw.join(class).join(format!("{i}.png"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, png(900 + i, 40, 30)).unwrap();
            parents.push((p, i % 2 == 0));
        }
        let root = d.path().join("datasets");
        let opts = |name: &str, tag: Tag| IngestOptions {
            datasets_root: root.clone(),
            name: name.into(),
            ingest: sv72::config::IngestConfig {
                threads: 2,
                ..Default::default()
            },
            split: SplitConfig {
                train: 0.34,
                val: 0.33,
                test: 0.33,
                salt: "children".into(),
            },
            tag,
        };
        let real_tag = Tag {
            source: Some(SourceKind::Real),
            generator: Some("natix".into()),
        };
        let spec = SourceSpec {
            folders: vec![raw.clone()],
            ..Default::default()
        };
        ingest(&spec, &opts("real", real_tag)).unwrap();
        let real = read_manifest(&root.join("real/manifest.parquet")).unwrap();

        let prompts = d.path().join("prompts.jsonl");
        let mut text = String::new();
        for (i, (p, rw)) in parents.iter().enumerate() {
            let label = if *rw { "roadwork" } else { "none" };
            text.push_str(&format!(
                "{}\n",
                json!({"id": format!("case{i}"), "prompt": "variant", "label": label, "image": p.display().to_string()})
            ));
        }
        text.push_str(&format!(
            "{}\n",
            json!({"id": "plain", "prompt": "new scene", "label": "none"})
        ));
        std::fs::write(&prompts, text).unwrap();
        let log = Arc::new(Mutex::new(Log::default()));
        let base = standin::start(Arc::new(move |r: &Req| {
            let v = r.json();
            log.lock()
                .unwrap()
                .calls
                .push((r.path.clone(), v["seed"].to_string()));
            let seed = v["seed"].as_u64().unwrap_or(0);
            let info = json!({"all_seeds": [seed], "sd_model_name": "sdxl"}).to_string();
            resp_json(
                200,
                json!({"images": [b64(&png(seed ^ 0x5555, 64, 48))], "info": info}),
            )
        }));
        let out = d.path().join("gen");
        let req = GenerateRequest {
            prompts,
            out: out.clone(),
            label: None,
            limit: None,
        };
        let r = generate::run(&req, &config(GenBackend::A1111, &base), None).unwrap();
        assert_eq!(r.generated, 13);

        let csv_spec = SourceSpec {
            csvs: vec![out.join(generate::CSV_FILE)],
            ..Default::default()
        };
        let rep = ingest(&csv_spec, &opts("synth", Tag::default())).unwrap();
        assert_eq!(rep.added, 13);
        assert_eq!((rep.parents_elsewhere, rep.parents_missing), (12, 0));
        let synth = read_manifest(&rep.manifest).unwrap();
        let by_id: HashMap<&str, &sv72::data::manifest::ManifestRow> =
            real.iter().map(|r| (r.id.as_str(), r)).collect();
        let mut splits = BTreeSet::new();
        for row in &synth {
            assert_eq!(row.source, SourceKind::Synthetic);
            assert!(row.generator.starts_with("a1111/"), "{}", row.generator);
            match &row.parent {
                Some(p) => {
                    let parent = by_id[p.as_str()];
                    assert_eq!(
                        (&row.group, row.split),
                        (&parent.group, parent.split),
                        "{}",
                        row.origin
                    );
                    assert_eq!(row.label, parent.label);
                    splits.insert(row.split);
                }
                None => assert!(row.origin.contains("plain")),
            }
        }
        assert!(
            splits.len() > 1,
            "every parent in one split: the check is vacuous"
        );
        let again = ingest(&csv_spec, &opts("synth", Tag::default())).unwrap();
        assert_eq!(again.added, 0);
        assert_eq!(read_manifest(&again.manifest).unwrap(), synth);
    }
}

mod openai {
    use super::*;

    const KEY: &str = "sk-test-0123456789abcdef";

    struct Srv {
        base: String,
        log: Arc<Mutex<Log>>,
        /// Requests that reached the CDN with an Authorization header.
        cdn_auth: Arc<Mutex<usize>>,
    }

    /// A CDN for `url` answers, and the API: generations (JSON) and edits (multipart).
    fn server(src: Vec<u8>) -> Srv {
        let cdn_auth = Arc::new(Mutex::new(0));
        let ca = cdn_auth.clone();
        let cdn = standin::start(Arc::new(move |r: &Req| {
            if r.headers.contains_key("authorization") {
                *ca.lock().unwrap() += 1;
            }
            let k: u64 = r
                .path
                .trim_start_matches("/img/")
                .trim_end_matches(".png")
                .parse()
                .unwrap_or(0);
            resp(200, png(k, 64, 48))
        }));
        let log = Arc::new(Mutex::new(Log::default()));
        let l2 = log.clone();
        let base = standin::start(Arc::new(move |r: &Req| {
            let mut l = l2.lock().unwrap();
            let auth = r.headers.get("authorization").cloned().unwrap_or_default();
            l.check(
                auth == format!("Bearer {KEY}"),
                format!("{}: authorization {auth:?}", r.path),
            );
            match r.path.as_str() {
                "/v1/images/generations" => {
                    let v = r.json();
                    let prompt = v["prompt"].as_str().unwrap_or("").to_string();
                    l.calls.push((r.path.clone(), prompt.clone()));
                    if let Some(resp) = l.take_injection(&prompt).and_then(injected) {
                        return resp;
                    }
                    let n = v["n"].as_u64().unwrap_or(0);
                    l.check(
                        v["model"] == json!("gpt-image-1"),
                        format!("model {}", v["model"]),
                    );
                    l.check(v["size"] == json!("64x48"), format!("size {}", v["size"]));
                    l.check(
                        v.get("response_format").is_none(),
                        "response_format sent to gpt-image-1",
                    );
                    l.check(
                        v.get("seed").is_none() && v.get("negative_prompt").is_none(),
                        "unknown fields sent",
                    );
                    l.check(n == 1, format!("n = {n}"));
                    if prompt.starts_with("a road with cones") {
                        l.check(
                            prompt.ends_with("Avoid: text, watermark"),
                            format!("negative not in prompt: {prompt}"),
                        );
                    }
                    let seed = prompt.len() as u64;
                    resp_json(
                        200,
                        json!({
                            "created": 1,
                            "data": (0..n).map(|i| json!({"b64_json": b64(&png(seed + i, 64, 48))})).collect::<Vec<_>>(),
                            "usage": {"total_tokens": 100, "cost": 0.04 * n as f64}
                        }),
                    )
                }
                "/v1/images/edits" => {
                    let parts = r.multipart();
                    let field = |n: &str| parts.iter().find(|p| p.name == n).map(|p| p.text());
                    l.calls
                        .push((r.path.clone(), field("prompt").unwrap_or_default()));
                    l.check(
                        field("model").as_deref() == Some("gpt-image-1"),
                        "edits: model",
                    );
                    l.check(field("n").as_deref() == Some("1"), "edits: n");
                    l.check(field("size").as_deref() == Some("64x48"), "edits: size");
                    l.check(
                        field("strength").is_none(),
                        "edits: strength is not an API field",
                    );
                    let img = parts.iter().find(|p| p.name == "image");
                    l.check(
                        img.is_some_and(|p| {
                            p.data == src
                                && p.content_type.as_deref() == Some("image/png")
                                && p.filename.is_some()
                        }),
                        "edits: `image` is not the source PNG",
                    );
                    resp_json(
                        200,
                        json!({"created": 1, "data": [{"url": format!("{cdn}/img/777.png")}]}),
                    )
                }
                other => resp(404, format!("no route {other}")),
            }
        }));
        Srv {
            base,
            log,
            cdn_auth,
        }
    }

    #[test]
    fn generations_edits_429_and_a_500_that_is_not_repeated() {
        let d = tempfile::tempdir().unwrap();
        let src_bytes = png(501, 40, 30);
        let src = d.path().join("src.png");
        std::fs::write(&src, &src_bytes).unwrap();
        let prompts = write_prompts(d.path(), &src);
        let s = server(src_bytes);
        s.log.lock().unwrap().inject = HashMap::from([
            (
                "a road with cones. Avoid: text, watermark".to_string(),
                vec![Inject::Status(429)],
            ),
            // A paid request that failed with 500 may have been carried out: not repeated.
            ("a barrier at dusk".to_string(), vec![Inject::Status(500)]),
        ]);
        let mut cfg = config(GenBackend::Openai, &format!("{}/v1", s.base));
        cfg.model = Some("gpt-image-1".into());
        let out = d.path().join("out");
        let req = GenerateRequest {
            prompts,
            out: out.clone(),
            label: None,
            limit: None,
        };
        let key = Secret::new(KEY);
        let r = generate::run(&req, &cfg, key.clone()).unwrap();
        assert_eq!(r.generated, 2);
        assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
        assert!(r.failures[0].error.contains("500") && !r.failures[0].error.contains(KEY));
        assert_eq!(r.failures[0].prompt_id, "p3");
        let calls = |p: &str| {
            s.log
                .lock()
                .unwrap()
                .calls
                .iter()
                .filter(|c| c.1 == p)
                .count()
        };
        assert_eq!(calls("a barrier at dusk"), 1);
        assert_eq!(calls("a road with cones. Avoid: text, watermark"), 2);

        // The re-run does only the failed one.
        let again = generate::run(&req, &cfg, key).unwrap();
        assert_eq!(
            (again.generated, again.skipped_done, again.failures.len()),
            (1, 2, 0)
        );
        assert_eq!(calls("a barrier at dusk"), 2);
        let l = s.log.lock().unwrap();
        assert!(l.problems.is_empty(), "{:#?}", l.problems);
        assert_eq!(
            *s.cdn_auth.lock().unwrap(),
            0,
            "the API key went to the CDN"
        );
        let rows = read_csv(&out.join(generate::CSV_FILE));
        assert_eq!(rows.len(), 3);
        let p1 = rows.iter().find(|r| r.prompt_id == "p1").unwrap();
        assert_eq!(
            (p1.seed, p1.cost_usd, p1.generator.as_str()),
            (None, Some(0.04), "openai/gpt-image-1")
        );
        let p2 = rows.iter().find(|r| r.prompt_id == "p2").unwrap();
        assert_eq!(p2.mode, generate::JobMode::I2i);
        assert_eq!((p2.strength, p2.cost_usd), (None, None));
        assert_eq!(std::fs::read(out.join(&p2.path)).unwrap(), png(777, 64, 48));
        assert!(again.cost_usd.is_some_and(|c| (c - 0.04).abs() < 1e-9));
    }

    /// A paid request that outlasts `timeout_s` may have been carried out: it fails once, is not
    /// sent again in the run, and the re-run asks for it again.
    #[test]
    fn a_timed_out_paid_request_is_not_repeated() {
        let d = tempfile::tempdir().unwrap();
        let src_bytes = png(504, 40, 30);
        let src = d.path().join("src.png");
        std::fs::write(&src, &src_bytes).unwrap();
        let prompts = write_prompts(d.path(), &src);
        let s = server(src_bytes);
        s.log.lock().unwrap().inject = HashMap::from([(
            "a barrier at dusk".to_string(),
            vec![Inject::Slow(Duration::from_millis(1600))],
        )]);
        let mut cfg = config(GenBackend::Openai, &format!("{}/v1", s.base));
        cfg.model = Some("gpt-image-1".into());
        let req = GenerateRequest {
            prompts,
            out: d.path().join("out"),
            label: None,
            limit: None,
        };
        let key = Secret::new(KEY);
        let t = Instant::now();
        let r = generate::run(&req, &cfg, key.clone()).unwrap();
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
        assert_eq!(r.generated, 2);
        assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
        assert_eq!(r.failures[0].prompt_id, "p3");
        assert!(
            r.failures[0].error.contains("not repeated"),
            "{}",
            r.failures[0].error
        );
        let calls = |p: &str| {
            s.log
                .lock()
                .unwrap()
                .calls
                .iter()
                .filter(|c| c.1 == p)
                .count()
        };
        assert_eq!(calls("a barrier at dusk"), 1);
        let again = generate::run(&req, &cfg, key).unwrap();
        assert_eq!((again.generated, again.skipped_done), (1, 2));
        assert_eq!(calls("a barrier at dusk"), 2);
        // The server may still be finishing the slow answer; the checks it made so far hold.
        assert!(s.log.lock().unwrap().problems.is_empty());
    }

    /// The key comes from the environment and never reaches the output, even when the server
    /// echoes it in an error.
    #[test]
    fn api_key_is_never_printed() {
        let d = tempfile::tempdir().unwrap();
        let list = d.path().join("p.txt");
        std::fs::write(&list, "one road\n").unwrap();
        let base = standin::start(Arc::new(|r: &Req| {
            let auth = r.headers.get("authorization").cloned().unwrap_or_default();
            resp_json(
                401,
                json!({"error": {"message": format!("Incorrect API key provided: {auth}")}}),
            )
        }));
        let o = Command::new(env!("CARGO_BIN_EXE_sv72"))
            .current_dir(d.path())
            .env("SV72_NO_PROGRESS", "1")
            .env("OPENAI_API_KEY", KEY)
            .args([
                "generate",
                "--backend",
                "openai",
                "--model",
                "gpt-image-1",
                "--endpoint",
                &base,
                "--label",
                "roadwork",
                "--prompts",
            ])
            .arg(&list)
            .arg("--out")
            .arg(d.path().join("out"))
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(o.status.code(), Some(1), "{all}");
        assert!(
            all.contains("401") && all.contains("not authorised"),
            "{all}"
        );
        assert!(all.contains("<redacted>"), "{all}");
        assert!(!all.contains(&KEY[3..]), "the key was printed:\n{all}");
    }
}

mod comfyui {
    use super::*;

    struct Job {
        seed: u64,
        polls: u32,
        posts: u32,
        /// Never leaves the queue (a hung server).
        stuck: bool,
    }

    #[derive(Default)]
    struct State {
        log: Log,
        uploads: HashMap<String, Vec<u8>>,
        jobs: HashMap<String, Job>,
        /// Image file name -> seed.
        files: HashMap<String, u64>,
        /// Jobs of this prompt text never finish.
        stuck_prompt: Option<String>,
    }

    fn workflow(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("configs/comfyui")
            .join(name)
    }

    /// /upload/image, /prompt, /queue, /history/<id>, /view, as ComfyUI answers them.
    fn server(state: Arc<Mutex<State>>) -> String {
        standin::start(Arc::new(move |r: &Req| {
            let mut st = state.lock().unwrap();
            let route = if r.path.starts_with("/history/") {
                "/history"
            } else {
                r.path.as_str()
            }
            .to_string();
            st.log.calls.push((route.clone(), r.path.clone()));
            if route != "/prompt" {
                if let Some(i) = st.log.take_injection(&route) {
                    // Not holding the state while a slow answer sleeps.
                    drop(st);
                    if let Some(resp) = injected(i) {
                        return resp;
                    }
                    st = state.lock().unwrap();
                }
            }
            match (r.method.as_str(), route.as_str()) {
                ("POST", "/upload/image") => {
                    let parts = r.multipart();
                    let img = parts.iter().find(|p| p.name == "image").cloned();
                    let field = |n: &str| parts.iter().find(|p| p.name == n).map(|p| p.text());
                    st.log.check(
                        field("overwrite").as_deref() == Some("true"),
                        "upload without overwrite",
                    );
                    st.log
                        .check(field("type").as_deref() == Some("input"), "upload type");
                    let Some(img) = img else {
                        return resp(400, "no image");
                    };
                    let name = img.filename.clone().unwrap_or_default();
                    st.uploads.insert(name.clone(), img.data);
                    resp_json(200, json!({"name": name, "subfolder": "", "type": "input"}))
                }
                ("POST", "/prompt") => {
                    // A refusal (429/503) comes before the job is queued; a lost answer after.
                    if let Some(Inject::Status(code)) = st
                        .log
                        .inject
                        .get("/prompt")
                        .and_then(|v| v.first().copied())
                    {
                        st.log.take_injection("/prompt");
                        return injected(Inject::Status(code)).unwrap();
                    }
                    let v = r.json();
                    let wf = &v["prompt"];
                    let id = v["prompt_id"].as_str().unwrap_or("").to_string();
                    st.log.check(id.len() == 36, format!("prompt_id {id:?}"));
                    st.log.check(
                        wf["6"]["inputs"]["text"]
                            .as_str()
                            .is_some_and(|t| !t.is_empty()),
                        "prompt text not filled",
                    );
                    st.log.check(
                        wf["4"]["inputs"]["ckpt_name"] == json!("sd_xl_base_1.0.safetensors"),
                        "checkpoint changed",
                    );
                    let seed = wf["3"]["inputs"]["seed"].as_u64().unwrap_or(u64::MAX);
                    if wf.get("10").is_some() {
                        let name = wf["10"]["inputs"]["image"]
                            .as_str()
                            .unwrap_or("")
                            .to_string();
                        let uploaded = st.uploads.contains_key(&name);
                        st.log
                            .check(uploaded, format!("LoadImage {name:?} was not uploaded"));
                        st.log.check(
                            wf["3"]["inputs"]["denoise"] == json!(0.3),
                            format!("denoise {}", wf["3"]["inputs"]["denoise"]),
                        );
                        st.log.check(
                            wf["11"]["inputs"]["pixels"] == json!(["10", 0]),
                            "i2i template damaged",
                        );
                    } else {
                        st.log
                            .check(wf["3"]["inputs"]["denoise"] == json!(1.0), "t2i denoise");
                    }
                    if wf["6"]["inputs"]["text"] == json!("a road with cones") {
                        st.log.check(
                            wf["7"]["inputs"]["text"] == json!("text, watermark"),
                            "negative not filled",
                        );
                    }
                    let stuck = st
                        .stuck_prompt
                        .as_ref()
                        .is_some_and(|p| wf["6"]["inputs"]["text"] == json!(p));
                    let job = st.jobs.entry(id.clone()).or_insert(Job {
                        seed,
                        polls: 0,
                        posts: 0,
                        stuck,
                    });
                    job.posts += 1;
                    if job.posts > 1 {
                        st.log.problems.push(format!("job {id} queued twice"));
                    }
                    if let Some(i) = st.log.take_injection("/prompt") {
                        if i == Inject::LostAnswer {
                            return resp_json(500, json!({"error": "lost"}));
                        }
                    }
                    resp_json(
                        200,
                        json!({"prompt_id": id, "number": 1, "node_errors": {}}),
                    )
                }
                ("GET", "/queue") => {
                    let pending: Vec<Value> = st
                        .jobs
                        .iter()
                        .filter(|(_, j)| j.polls < 2 || j.stuck)
                        .map(|(id, _)| json!([1, id, {}, {}, []]))
                        .collect();
                    resp_json(200, json!({"queue_running": [], "queue_pending": pending}))
                }
                ("GET", "/history") => {
                    let id = r.path.trim_start_matches("/history/").to_string();
                    let Some(job) = st.jobs.get_mut(&id) else {
                        return resp_json(200, json!({}));
                    };
                    if job.polls < 2 || job.stuck {
                        job.polls += 1;
                        return resp_json(200, json!({}));
                    }
                    let seed = job.seed;
                    let file = format!("sv72_{}_00001_.png", &id[..8]);
                    st.files.insert(file.clone(), seed);
                    resp_json(
                        200,
                        json!({ id.clone(): {
                            "prompt": [1, id, {}, {}, ["9"]],
                            "outputs": {
                                "9": {"images": [{"filename": file, "subfolder": "", "type": "output"}]},
                                "12": {"images": [{"filename": "preview.png", "subfolder": "", "type": "temp"}]}
                            },
                            "status": {"status_str": "success", "completed": true, "messages": []}
                        }}),
                    )
                }
                ("GET", "/view") => {
                    let f = r.query.get("filename").cloned().unwrap_or_default();
                    st.log.check(
                        r.query.get("type").map(String::as_str) == Some("output"),
                        format!("view type {:?}", r.query),
                    );
                    match st.files.get(&f) {
                        Some(&seed) => resp(200, png(seed, 64, 48)),
                        None => {
                            st.log.problems.push(format!("view of unknown {f}"));
                            resp(404, "no such file")
                        }
                    }
                }
                _ => resp(404, "no route"),
            }
        }))
    }

    #[test]
    fn queue_history_view_with_a_lost_answer_and_resume() {
        let d = tempfile::tempdir().unwrap();
        let src_bytes = png(502, 40, 30);
        let src = d.path().join("src.png");
        std::fs::write(&src, &src_bytes).unwrap();
        let prompts = write_prompts(d.path(), &src);
        let state = Arc::new(Mutex::new(State::default()));
        state.lock().unwrap().log.inject = HashMap::from([
            ("/prompt".to_string(), vec![Inject::LostAnswer]),
            ("/history".to_string(), vec![Inject::Status(503)]),
            ("/upload/image".to_string(), vec![Inject::Status(500)]),
        ]);
        let base = server(state.clone());
        let mut cfg = config(GenBackend::Comfyui, &base);
        cfg.comfyui.workflow = Some(workflow("sdxl-t2i.json"));
        cfg.comfyui.workflow_i2i = Some(workflow("sdxl-i2i.json"));
        cfg.comfyui.poll_ms = 10;
        cfg.timeout_s = 10;
        let out = d.path().join("out");
        let req = GenerateRequest {
            prompts,
            out: out.clone(),
            label: None,
            limit: None,
        };
        let r = generate::run(&req, &cfg, None).unwrap();
        {
            let st = state.lock().unwrap();
            assert!(st.log.problems.is_empty(), "{:#?}", st.log.problems);
            assert_eq!(st.jobs.len(), 3);
            assert!(st.jobs.values().all(|j| j.posts == 1));
            assert_eq!(st.uploads.values().collect::<Vec<_>>(), [&src_bytes]);
        }
        assert!(r.failures.is_empty(), "{:?}", r.failures);
        assert_eq!(r.generated, 3);
        let rows = read_csv(&out.join(generate::CSV_FILE));
        for row in &rows {
            assert_eq!(row.generator, "comfyui/sd_xl_base_1.0.safetensors");
            assert_eq!(
                std::fs::read(out.join(&row.path)).unwrap(),
                png(row.seed.unwrap(), 64, 48)
            );
        }
        let p2 = rows.iter().find(|r| r.prompt_id == "p2").unwrap();
        assert_eq!(
            (p2.mode, p2.strength, p2.seed),
            (generate::JobMode::I2i, Some(0.3), Some(22))
        );
        assert_eq!(
            p2.parent.as_deref(),
            Some(sv72::util::hash::content_hash(&src_bytes).as_str())
        );

        // Killed after ComfyUI finished but before the journal was written: the re-run finds
        // the jobs in /history by their ids and queues nothing.
        std::fs::remove_file(out.join(generate::JOURNAL_FILE)).unwrap();
        let again = generate::run(&req, &cfg, None).unwrap();
        assert_eq!(again.generated, 3);
        let st = state.lock().unwrap();
        assert!(
            st.jobs.values().all(|j| j.posts == 1),
            "a finished job was queued again"
        );
        assert_eq!(read_csv(&out.join(generate::CSV_FILE)).len(), 3);
    }

    /// A 429 on /prompt is asked again (nothing was queued), a /view that outlasts the timeout is
    /// fetched again (a read), and a job that never finishes fails after `timeout_s` without
    /// stopping the others or being queued twice.
    #[test]
    fn rate_limit_slow_view_and_a_hung_job() {
        let d = tempfile::tempdir().unwrap();
        let src_bytes = png(503, 40, 30);
        let src = d.path().join("src.png");
        std::fs::write(&src, &src_bytes).unwrap();
        let prompts = write_prompts(d.path(), &src);
        let state = Arc::new(Mutex::new(State {
            stuck_prompt: Some("a barrier at dusk".into()),
            ..Default::default()
        }));
        state.lock().unwrap().log.inject = HashMap::from([
            ("/prompt".to_string(), vec![Inject::Status(429)]),
            (
                "/view".to_string(),
                vec![Inject::Slow(Duration::from_millis(1600))],
            ),
        ]);
        let base = server(state.clone());
        let mut cfg = config(GenBackend::Comfyui, &base);
        cfg.comfyui.workflow = Some(workflow("sdxl-t2i.json"));
        cfg.comfyui.workflow_i2i = Some(workflow("sdxl-i2i.json"));
        cfg.comfyui.poll_ms = 20;
        cfg.timeout_s = 1;
        let out = d.path().join("out");
        let req = GenerateRequest {
            prompts,
            out: out.clone(),
            label: None,
            limit: None,
        };
        let t = Instant::now();
        let r = generate::run(&req, &cfg, None).unwrap();
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
        let st = state.lock().unwrap();
        assert!(st.log.problems.is_empty(), "{:#?}", st.log.problems);
        assert_eq!(r.generated, 2, "{:?}", r.failures);
        assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
        assert_eq!(r.failures[0].prompt_id, "p3");
        assert!(
            r.failures[0].error.contains("not finished after 1 s"),
            "{}",
            r.failures[0].error
        );
        assert!(st.jobs.values().all(|j| j.posts == 1), "a job queued twice");
        let count = |route: &str| st.log.calls.iter().filter(|c| c.0 == route).count();
        // 3 jobs queued once each, plus the refused one.
        assert_eq!(count("/prompt"), 4);
        // 2 images fetched, plus the one that timed out.
        assert_eq!(count("/view"), 3);
        let rows = read_csv(&out.join(generate::CSV_FILE));
        assert_eq!(
            rows.iter()
                .map(|r| r.prompt_id.as_str())
                .collect::<Vec<_>>(),
            ["p1", "p2"]
        );
        for row in &rows {
            assert_eq!(
                std::fs::read(out.join(&row.path)).unwrap(),
                png(row.seed.unwrap(), 64, 48)
            );
        }
        drop(st);

        // The hung job is still queued on the server; once it finishes, the re-run collects it
        // instead of queueing a copy.
        for j in state.lock().unwrap().jobs.values_mut() {
            j.stuck = false;
        }
        let again = generate::run(&req, &cfg, None).unwrap();
        assert_eq!(
            (again.generated, again.skipped_done, again.failures.len()),
            (1, 2, 0),
            "{:?}",
            again.failures
        );
        let st = state.lock().unwrap();
        assert!(st.log.problems.is_empty(), "{:#?}", st.log.problems);
        assert_eq!(st.jobs.len(), 3);
        assert!(
            st.jobs.values().all(|j| j.posts == 1),
            "the hung job was queued again"
        );
        assert_eq!(read_csv(&out.join(generate::CSV_FILE)).len(), 3);
    }

    #[test]
    fn workflow_errors_name_the_file_and_input() {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = config(GenBackend::Comfyui, "http://127.0.0.1:9");
        cfg.comfyui.workflow = Some(workflow("sdxl-t2i.json"));
        cfg.comfyui.workflow_i2i = None;
        cfg.comfyui.seed_input = "3.noise_seed".into();
        let err = format!("{:#}", generate::backend(&cfg, None).err().unwrap());
        assert!(
            err.contains("sdxl-t2i.json") && err.contains("noise_seed") && err.contains("seed"),
            "{err}"
        );
        // A UI-format workflow is refused with the fix.
        let ui = d.path().join("ui.json");
        std::fs::write(&ui, r#"{"nodes": [], "links": []}"#).unwrap();
        cfg.comfyui.workflow = Some(ui);
        cfg.comfyui.seed_input = "3.seed".into();
        let err = format!("{:#}", generate::backend(&cfg, None).err().unwrap());
        assert!(err.contains("Save (API Format)"), "{err}");
    }
}

/// mine-hard's prompts.jsonl is read as it is: label, seed, source image and strength.
#[test]
fn reads_mine_hard_prompts() {
    use sv72::cycle::mine::{Prompt, Reason, Target};
    let d = tempfile::tempdir().unwrap();
    let p = Prompt {
        id: "ab".repeat(32),
        target: Target::Sdxl,
        label: "roadwork".into(),
        label_known: false,
        error: Some("false_negative".into()),
        reasons: vec![Reason::Misclassified],
        level: Some(2),
        attrs: None,
        seed: 1234,
        prompt: "dashcam photo".into(),
        negative_prompt: "text".into(),
        image: "/data/case.jpg".into(),
        strength: sv72::cycle::mine::prompts::I2I_STRENGTH,
    };
    std::fs::write(
        d.path().join("prompts.jsonl"),
        format!("{}\n", serde_json::to_string(&p).unwrap()),
    )
    .unwrap();
    let got = generate::read_prompts(d.path(), None).unwrap();
    let g = &got[0];
    assert_eq!(
        (g.id.as_str(), g.label, g.seed),
        (p.id.as_str(), 1, Some(1234))
    );
    assert_eq!(g.image.as_deref(), Some(Path::new("/data/case.jpg")));
    assert_eq!((g.strength, g.label_known), (Some(0.5), false));
    assert_eq!(g.negative.as_deref(), Some("text"));
}
