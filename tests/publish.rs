//! Publishing: the Hub push client (`export::push`) and `sv72 register`, against stand-ins on
//! 127.0.0.1 (a Hugging Face Hub that checks the upload protocol, a NATIX registration service
//! that verifies the sr25519 signature), plus bittensor hotkey files (plain and `$NACL`).

use crate::common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use common::http::{resp, resp_json, start as start_server, Handler, Req, Resp};

fn sha_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

mod hub {
    use super::*;
    use sv72::export::push::{push_folder, PushOptions};

    const TOKEN: &str = "hf_standin_SECRET_0123456789";
    const REPO: &str = "natix-test/roadwork";
    /// Files above this size get the multipart answer.
    const MULTIPART_OVER: usize = 4000;
    const CHUNK: usize = 2048;

    #[derive(Default)]
    struct State {
        /// Route names in arrival order.
        log: Vec<String>,
        repo_exists: bool,
        /// LFS objects stored: oid -> bytes.
        blobs: HashMap<String, Vec<u8>>,
        /// Multipart parts received: (oid, part) -> bytes.
        parts: BTreeMap<(String, usize), Vec<u8>>,
        commits: Vec<(Value, Committed)>,
        /// Route names that answer 500 once.
        fail_once: HashSet<String>,
        /// Answer 401 to everything.
        reject_token: bool,
        /// Errors found in the client's requests.
        problems: Vec<String>,
        /// Requests to storage URLs that carried an Authorization header.
        token_to_storage: usize,
    }

    type Shared = Arc<Mutex<State>>;
    /// Committed files: path -> ("file"|"lfsFile", bytes).
    type Committed = BTreeMap<String, (String, Vec<u8>)>;

    fn handle(st: &Shared, base: &str, req: &Req) -> Resp {
        let mut s = st.lock().unwrap();
        let storage = req.target.starts_with("/storage/");
        let route = if req.target == "/api/repos/create" {
            "create".to_string()
        } else if req
            .target
            .starts_with(&format!("/api/models/{REPO}/preupload/"))
        {
            "preupload".into()
        } else if req.target == format!("/{REPO}.git/info/lfs/objects/batch") {
            "batch".into()
        } else if req.target.starts_with("/storage/put/") {
            "put".into()
        } else if req.target.starts_with("/storage/part/") {
            "part".into()
        } else if req.target.starts_with("/lfs/complete/") {
            "complete".into()
        } else if req.target == "/lfs/verify" {
            "verify".into()
        } else if req
            .target
            .starts_with(&format!("/api/models/{REPO}/commit/"))
        {
            "commit".into()
        } else {
            format!("unknown {} {}", req.method, req.target)
        };
        s.log.push(route.clone());
        let auth = req.headers.get("authorization").cloned();
        if storage {
            if auth.is_some() {
                s.token_to_storage += 1;
            }
        } else if route != "complete" {
            if s.reject_token {
                // A Hub echoing the credential it refused: the client must still not show it.
                let mut r = resp_json(
                    401,
                    json!({"error": format!("Invalid credentials in Authorization header: {}", auth.unwrap_or_default())}),
                );
                r.headers
                    .push(("X-Error-Message".into(), format!("Invalid token {TOKEN}")));
                return r;
            }
            if auth.as_deref() != Some(&format!("Bearer {TOKEN}")) {
                s.problems
                    .push(format!("{route}: bad authorization {auth:?}"));
                return resp_json(401, json!({"error": "Invalid credentials"}));
            }
        }
        if s.fail_once.remove(&route) {
            return resp_json(500, json!({"error": "transient"}));
        }
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        match route.as_str() {
            "create" => {
                if body
                    != json!({"type":"model","name":"roadwork","organization":"natix-test","private":true})
                {
                    s.problems.push(format!("create body {body}"));
                }
                if s.repo_exists {
                    return resp_json(409, json!({"error": "You already created this model repo"}));
                }
                s.repo_exists = true;
                resp_json(200, json!({"url": format!("{base}/{REPO}")}))
            }
            "preupload" => {
                if !req.target.ends_with("/preupload/main") {
                    s.problems.push(format!("preupload path {}", req.target));
                }
                let files = body["files"].as_array().cloned().unwrap_or_default();
                let answer: Vec<Value> = files
                    .iter()
                    .map(|f| {
                        let path = f["path"].as_str().unwrap_or("").to_string();
                        let size = f["size"].as_u64().unwrap_or(0);
                        let sample = base64::engine::general_purpose::STANDARD
                            .decode(f["sample"].as_str().unwrap_or(""))
                            .unwrap_or_default();
                        if sample.len() as u64 != size.min(512) {
                            s.problems
                                .push(format!("{path}: sample of {} bytes", sample.len()));
                        }
                        let lfs = path.ends_with(".safetensors")
                            || path.ends_with(".bin")
                            || path == "empty.txt";
                        json!({"path": path, "uploadMode": if lfs {"lfs"} else {"regular"},
                               "shouldIgnore": path.ends_with(".log")})
                    })
                    .collect();
                resp_json(200, json!({"files": answer}))
            }
            "batch" => {
                if req.headers.get("content-type").map(String::as_str)
                    != Some("application/vnd.git-lfs+json")
                {
                    s.problems.push("batch content-type".into());
                }
                if body["operation"] != "upload" || body["hash_algo"] != "sha256" {
                    s.problems.push(format!("batch body {body}"));
                }
                let mut out = Vec::new();
                for o in body["objects"].as_array().cloned().unwrap_or_default() {
                    let oid = o["oid"].as_str().unwrap_or("").to_string();
                    let size = o["size"].as_u64().unwrap_or(0) as usize;
                    if s.blobs.contains_key(&oid) {
                        out.push(json!({"oid": oid, "size": size}));
                    } else if size > MULTIPART_OVER {
                        let mut header = serde_json::Map::new();
                        header.insert("chunk_size".into(), json!(CHUNK.to_string()));
                        for n in 1..=size.div_ceil(CHUNK) {
                            header.insert(
                                format!("{n:05}"),
                                json!(format!(
                                    "{base}/storage/part/{oid}/{n}?X-Amz-Signature=presigned"
                                )),
                            );
                        }
                        out.push(json!({"oid": oid, "size": size, "actions": {
                            "upload": {"href": format!("{base}/lfs/complete/{oid}"), "header": header},
                            "verify": {"href": format!("{base}/lfs/verify")}}}));
                    } else {
                        out.push(json!({"oid": oid, "size": size, "actions": {
                            "upload": {"href": format!("{base}/storage/put/{oid}?X-Amz-Signature=presigned"),
                                       "header": {"X-Upload-Ticket": format!("t-{oid}")}},
                            "verify": {"href": format!("{base}/lfs/verify")}}}));
                    }
                }
                resp_json(200, json!({"transfer": "basic", "objects": out}))
            }
            "put" => {
                let oid = req
                    .target
                    .trim_start_matches("/storage/put/")
                    .split('?')
                    .next()
                    .unwrap_or("")
                    .to_string();
                if req.headers.get("x-upload-ticket") != Some(&format!("t-{oid}")) {
                    s.problems
                        .push(format!("put {oid}: the action's header was not sent"));
                }
                if sha_hex(&req.body) != oid {
                    s.problems.push(format!("put {oid}: body sha256 differs"));
                }
                s.blobs.insert(oid, req.body.clone());
                resp(200, "")
            }
            "part" => {
                let rest = req
                    .target
                    .trim_start_matches("/storage/part/")
                    .split('?')
                    .next()
                    .unwrap_or("");
                let (oid, n) = rest.split_once('/').unwrap_or(("", "0"));
                let n: usize = n.parse().unwrap_or(0);
                s.parts.insert((oid.to_string(), n), req.body.clone());
                let mut r = resp(200, "");
                r.headers.push(("ETag".into(), format!("\"etag-{n}\"")));
                r
            }
            "complete" => {
                let oid = req.target.trim_start_matches("/lfs/complete/").to_string();
                let parts = body["parts"].as_array().cloned().unwrap_or_default();
                let mut all = Vec::new();
                for (i, p) in parts.iter().enumerate() {
                    if p["partNumber"] != json!(i + 1)
                        || p["etag"] != json!(format!("\"etag-{}\"", i + 1))
                    {
                        s.problems.push(format!("complete: part {p}"));
                    }
                    all.extend(
                        s.parts
                            .get(&(oid.clone(), i + 1))
                            .cloned()
                            .unwrap_or_default(),
                    );
                }
                if body["oid"] != json!(oid) || sha_hex(&all) != oid {
                    s.problems
                        .push(format!("complete {oid}: parts do not add up"));
                }
                s.blobs.insert(oid, all);
                resp_json(200, json!({}))
            }
            "verify" => {
                let oid = body["oid"].as_str().unwrap_or("");
                match s.blobs.get(oid) {
                    Some(b) if Some(b.len() as u64) == body["size"].as_u64() => {
                        resp_json(200, json!({}))
                    }
                    _ => resp_json(404, json!({"error": "object not found"})),
                }
            }
            "commit" => {
                if req.headers.get("content-type").map(String::as_str)
                    != Some("application/x-ndjson")
                {
                    s.problems.push("commit content-type".into());
                }
                let text = String::from_utf8_lossy(&req.body).to_string();
                let mut lines = text
                    .lines()
                    .map(|l| serde_json::from_str::<Value>(l).unwrap_or(Value::Null));
                let header = lines.next().unwrap_or(Value::Null);
                if header["key"] != "header" {
                    s.problems.push(format!("commit: first line {header}"));
                }
                let mut files = BTreeMap::new();
                for l in lines {
                    let v = &l["value"];
                    let path = v["path"].as_str().unwrap_or("").to_string();
                    match l["key"].as_str() {
                        Some("file") => {
                            if v["encoding"] != "base64" {
                                s.problems.push(format!("{path}: encoding"));
                            }
                            let b = base64::engine::general_purpose::STANDARD
                                .decode(v["content"].as_str().unwrap_or(""))
                                .unwrap_or_default();
                            files.insert(path, ("file".to_string(), b));
                        }
                        Some("lfsFile") => {
                            let oid = v["oid"].as_str().unwrap_or("");
                            let blob = s.blobs.get(oid).cloned();
                            match blob {
                                Some(b) if v["algo"] == "sha256" && v["size"] == json!(b.len()) => {
                                    files.insert(path, ("lfsFile".to_string(), b));
                                }
                                _ => s.problems.push(format!("{path}: lfsFile {v} not uploaded")),
                            }
                        }
                        _ => s.problems.push(format!("commit line {l}")),
                    }
                }
                s.commits.push((header["value"].clone(), files));
                resp_json(
                    200,
                    json!({"commitOid": "c0ffee0000000000000000000000000000000001",
                                      "commitUrl": format!("{base}/{REPO}/commit/c0ffee")}),
                )
            }
            _ => resp_json(404, json!({"error": "no such route"})),
        }
    }

    fn stand_in() -> (String, Shared) {
        let st: Shared = Arc::default();
        let base = Arc::new(Mutex::new(String::new()));
        let (st2, base2) = (st.clone(), base.clone());
        let url = start_server(Arc::new(move |r: &Req| {
            let b = base2.lock().unwrap().clone();
            handle(&st2, &b, r)
        }));
        *base.lock().unwrap() = url.clone();
        (url, st)
    }

    fn opts(endpoint: &str) -> PushOptions {
        PushOptions {
            endpoint: endpoint.to_string(),
            token: TOKEN.to_string(),
            private: true,
            revision: "main".into(),
            commit_message: "sv72 export 1.0.0".into(),
        }
    }

    /// An export-like folder: big weights (multipart), a mid-size LFS file (basic PUT), small
    /// regular files, an empty file and one the Hub says to ignore.
    fn folder(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut files = BTreeMap::new();
        files.insert(
            "model.safetensors".to_string(),
            (0..9000u32)
                .map(|i| (i * 31 % 251) as u8)
                .collect::<Vec<u8>>(),
        );
        files.insert(
            "extra/aux.bin".to_string(),
            (0..1500u32).map(|i| (i * 7 % 253) as u8).collect(),
        );
        files.insert(
            "config.json".to_string(),
            br#"{"model_type":"dinov2"}"#.to_vec(),
        );
        files.insert("README.md".to_string(), b"# card\n".to_vec());
        files.insert("empty.txt".to_string(), Vec::new());
        files.insert("debug.log".to_string(), b"ignored".to_vec());
        for (p, b) in &files {
            let f = dir.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, b).unwrap();
        }
        files
    }

    #[test]
    fn push_uploads_lfs_streams_and_commits_once_with_retries() {
        std::env::set_var("SV72_NO_PROGRESS", "1");
        let (url, st) = stand_in();
        let dir = tempfile::tempdir().unwrap();
        let files = folder(dir.path());
        st.lock().unwrap().fail_once.extend([
            "preupload".to_string(),
            "put".to_string(),
            "part".to_string(),
        ]);

        let rep = push_folder(dir.path(), REPO, &opts(&url)).unwrap();
        {
            let s = st.lock().unwrap();
            assert!(s.problems.is_empty(), "{:?}", s.problems);
            assert_eq!(s.token_to_storage, 0, "the token went to a storage URL");
            assert!(s.fail_once.is_empty(), "an injected failure was never hit");
            // Sequence: create, preupload (500, retry), batch, uploads, commit last.
            let first: Vec<&str> = s.log.iter().take(4).map(String::as_str).collect();
            assert_eq!(first, ["create", "preupload", "preupload", "batch"]);
            assert_eq!(s.log.last().map(String::as_str), Some("commit"));
            assert_eq!(s.log.iter().filter(|r| *r == "commit").count(), 1);
            assert_eq!(s.log.iter().filter(|r| *r == "verify").count(), 2);
            // 9000 bytes in 2048-byte parts: 5 parts + one retried.
            assert_eq!(s.log.iter().filter(|r| *r == "part").count(), 6);
            assert_eq!(s.commits.len(), 1);
            let (header, committed) = &s.commits[0];
            assert_eq!(header["summary"], "sv72 export 1.0.0");
            let mut expected = files.clone();
            expected.remove("debug.log");
            assert_eq!(
                committed.keys().collect::<Vec<_>>(),
                expected.keys().collect::<Vec<_>>()
            );
            for (p, (kind, bytes)) in committed {
                assert_eq!(bytes, &expected[p], "{p}");
                let lfs = p.ends_with(".safetensors") || p.ends_with(".bin");
                assert_eq!(kind, if lfs { "lfsFile" } else { "file" }, "{p}");
            }
        }
        assert_eq!(rep.lfs_bytes, 9000 + 1500);
        assert_eq!(
            rep.commit.as_deref(),
            Some("c0ffee0000000000000000000000000000000001")
        );
        assert_eq!(rep.url, format!("{url}/{REPO}"));
        assert!(!rep.files.contains(&"debug.log".to_string()));
        assert_eq!(rep.files.len(), 5);

        // A second push: the repo exists (409) and the Hub has both objects, so nothing is PUT.
        st.lock().unwrap().log.clear();
        let rep2 = push_folder(dir.path(), REPO, &opts(&url)).unwrap();
        let s = st.lock().unwrap();
        assert!(s.problems.is_empty(), "{:?}", s.problems);
        assert_eq!(rep2.lfs_bytes, 0);
        assert!(
            !s.log
                .iter()
                .any(|r| r == "put" || r == "part" || r == "verify"),
            "{:?}",
            s.log
        );
        assert_eq!(s.commits.len(), 2);
    }

    /// What miners run: `sv72 export CKPT --hotkey … --push ORG/REPO` with HF_TOKEN set. The Hub
    /// receives exactly the export folder, byte for byte, in one commit; the token never shows.
    #[test]
    fn export_cli_pushes_the_whole_export() {
        use sv72::train::FeatureSet;

        let (url, st) = stand_in();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let snapshot = super::common::fixture("backbones/dinov2_reg4_s36");
        let mut cfg = sv72::config::Config::default();
        cfg.paths.checkpoints = root.join("checkpoints");
        cfg.paths.feature_cache = root.join("features");
        cfg.train.epochs = 2;
        let hidden = 36;
        let features = |n: usize, seed: u64| {
            let mut fs = FeatureSet::default();
            for i in 0..n {
                let y = (i % 2) as u8;
                let v: Vec<f32> = (0..2 * hidden)
                    .map(|j| ((i * 131 + j * 17 + seed as usize) % 97) as f32 / 97.0 + f32::from(y))
                    .collect();
                fs.push(&v, y, false, 0).unwrap();
            }
            fs
        };
        let run = super::common::train_on_features(
            &cfg,
            &snapshot,
            hidden,
            features(40, 1),
            features(20, 2),
        );

        let hotkey = sv72::keys::ss58_encode(&[5; 32], 42);
        let set = |k: &str, v: &Path| format!("{k}={}", v.display());
        let (exports, features_dir) = (root.join("exports"), root.join("features"));
        let endpoint = format!("export.hf_endpoint={url}");
        let args = [
            "--set",
            &set("paths.exports", &exports),
            "--set",
            &set("paths.feature_cache", &features_dir),
            "--set",
            &endpoint,
            "--set",
            "export.private=true",
            "export",
            run.to_str().unwrap(),
            "--target",
            "transformers",
            "--hotkey",
            &hotkey,
            "--push",
            REPO,
        ];
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sv72"))
            .current_dir(root)
            .env("SV72_NO_PROGRESS", "1")
            .env("HF_TOKEN", TOKEN)
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(!text.contains(TOKEN), "the token was printed:\n{text}");
        assert!(text.contains(&format!("{url}/{REPO}")), "{text}");

        let dir = exports.join("sv72-roadwork-1.0.0");
        let local: BTreeMap<String, Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        let s = st.lock().unwrap();
        assert!(s.problems.is_empty(), "{:?}", s.problems);
        assert_eq!(s.commits.len(), 1);
        let committed = &s.commits[0].1;
        assert_eq!(
            committed.keys().collect::<Vec<_>>(),
            local.keys().collect::<Vec<_>>()
        );
        for (name, (kind, bytes)) in committed {
            assert_eq!(bytes, &local[name], "{name} differs on the Hub");
            if name == "model.safetensors" {
                assert_eq!(kind, "lfsFile");
            }
        }
        let card: Value = serde_json::from_slice(&committed["model_card.json"].1).unwrap();
        assert_eq!(card["submitted_by"], hotkey.as_str());
        assert_eq!(card["version"], "1.0.0");
    }

    #[test]
    fn push_errors_name_status_and_message_never_the_token() {
        std::env::set_var("SV72_NO_PROGRESS", "1");
        let (url, st) = stand_in();
        let dir = tempfile::tempdir().unwrap();
        folder(dir.path());
        st.lock().unwrap().reject_token = true;
        let e = format!(
            "{:#}",
            push_folder(dir.path(), REPO, &opts(&url)).unwrap_err()
        );
        assert!(e.contains("401"), "{e}");
        assert!(e.contains("Invalid token"), "{e}");
        assert!(!e.contains(TOKEN), "token leaked: {e}");
        assert!(!format!("{:?}", opts(&url)).contains(TOKEN));
        // Nothing after the refused first request.
        assert_eq!(st.lock().unwrap().log, ["create"]);

        // A 500 that never clears: retried a bounded number of times, then a clear error.
        let (url, st) = stand_in();
        {
            let mut s = st.lock().unwrap();
            s.repo_exists = true;
        }
        let always: Handler = {
            let st = st.clone();
            Arc::new(move |r: &Req| {
                st.lock().unwrap().log.push(r.target.clone());
                resp_json(503, json!({"error": "Service Unavailable"}))
            })
        };
        let url503 = start_server(always);
        let e = format!(
            "{:#}",
            push_folder(dir.path(), REPO, &opts(&url503)).unwrap_err()
        );
        assert!(
            e.contains("503") && e.contains("Service Unavailable"),
            "{e}"
        );
        let tries = st.lock().unwrap().log.len();
        assert!((2..=6).contains(&tries), "{tries} attempts");
        let _ = url;

        // Bad input: not org/name, no token, no such folder.
        let e = push_folder(dir.path(), "roadwork", &opts(&url503)).unwrap_err();
        assert!(e.to_string().contains("ORG/NAME"), "{e}");
        let mut o = opts(&url503);
        o.token = String::new();
        assert!(push_folder(dir.path(), REPO, &o)
            .unwrap_err()
            .to_string()
            .contains("HF_TOKEN"));
        let e = format!(
            "{:#}",
            push_folder(&dir.path().join("nope"), REPO, &opts(&url503)).unwrap_err()
        );
        assert!(e.contains("nope"), "{e}");
    }
}

mod register {
    use super::*;
    use std::process::{Command, Output};
    use sv72::keys::{
        decrypt_nacl_keyfile, keyfile_format, load_wallet_signing_key, mini_secret_from_mnemonic,
        signing_key_from_keyfile_json, verify_sr25519, KeyfileFormat, SigningKey,
    };
    use zeroize::Zeroizing;

    // substrate's well-known dev keys (public test vectors, never real keys).
    const ALICE_SEED: &str = "e5be9a5092b81bca64be81d212e7f2f9eba183bb7a90954f7b76361f6edb5c0a";
    const ALICE_PK: &str = "d43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d";
    const ALICE: &str = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";
    const DEV_PHRASE: &str =
        "bottom drive obey lake curtain smoke basket hold race lonely fit walk";
    const DEV_SEED: &str = "fac7959dbfe72f052e5a0c3c8d6530f202b02fd8f9f5ca3580ec8deb7797479e";
    const DEV_PK: &str = "46ebddef8cd9bb167dc30878d7113b7e168e6f0646beffd77d69d39bad76b47a";
    const DEV_SS58: &str = "5DfhGyQdFobKM8NsWvEeAKk5EQQgYe9AydgJ7rMB6E1EqRzV";
    /// Password of tests/fixtures/wallets/locked (tools/make_wallet_fixture.py).
    const PASSWORD: &str = "correct horse 72";

    /// argon2i "sensitive" takes 512 MiB; one derivation at a time keeps the test binary modest.
    static ARGON: Mutex<()> = Mutex::new(());

    fn fixture_wallets() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wallets")
    }

    fn seed_bytes(h: &str) -> [u8; 32] {
        hex::decode(h).unwrap().try_into().unwrap()
    }

    #[test]
    fn hotkey_json_seed_mnemonic_and_private_key() {
        // secretSeed (0x-hex mini secret).
        let k = signing_key_from_keyfile_json(
            format!(r#"{{"secretSeed":"0x{ALICE_SEED}","ss58Address":"{ALICE}"}}"#).as_bytes(),
            "f",
        )
        .unwrap();
        assert_eq!(k.ss58(), ALICE);
        // Mnemonic -> substrate mini secret (PBKDF2 over the entropy) -> the dev account.
        let mini = mini_secret_from_mnemonic(DEV_PHRASE, "").unwrap();
        assert_eq!(hex::encode(*mini), DEV_SEED);
        let k = signing_key_from_keyfile_json(
            format!(r#"{{"secretPhrase":"{DEV_PHRASE}","publicKey":"0x{DEV_PK}"}}"#).as_bytes(),
            "f",
        )
        .unwrap();
        assert_eq!(k.ss58(), DEV_SS58);
        assert!(mini_secret_from_mnemonic("bottom drive obey lake", "").is_err());
        // privateKey in both encodings: schnorrkel canonical and the ed25519-style one.
        let mini = schnorrkel::MiniSecretKey::from_bytes(&seed_bytes(ALICE_SEED)).unwrap();
        let kp = mini.expand_to_keypair(schnorrkel::ExpansionMode::Ed25519);
        for sk in [kp.secret.to_bytes(), kp.secret.to_ed25519_bytes()] {
            let k = signing_key_from_keyfile_json(
                format!(
                    r#"{{"privateKey":"0x{}","accountId":"0x{ALICE_PK}"}}"#,
                    hex::encode(sk)
                )
                .as_bytes(),
                "f",
            )
            .unwrap();
            assert_eq!(k.ss58(), ALICE);
        }
        // The derived key must match what the file states.
        let e = signing_key_from_keyfile_json(
            format!(r#"{{"secretSeed":"0x{DEV_SEED}","ss58Address":"{ALICE}"}}"#).as_bytes(),
            "hotkeys/x",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("hotkeys/x") && e.contains(DEV_SS58) && e.contains(ALICE),
            "{e}"
        );
        assert!(!e.contains(DEV_SEED), "{e}");
        // A public-only file, bad hex, other formats.
        let e = signing_key_from_keyfile_json(
            format!(r#"{{"ss58Address":"{ALICE}"}}"#).as_bytes(),
            "f",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no secret"), "{e}");
        assert!(signing_key_from_keyfile_json(br#"{"secretSeed":"0xzz"}"#, "f").is_err());
        assert_eq!(
            keyfile_format(b"$ANSIBLE_VAULT;1.1;AES256\n"),
            KeyfileFormat::AnsibleVault
        );
        assert_eq!(keyfile_format(b"gAAAAABk"), KeyfileFormat::Fernet);
        let dir = tempfile::tempdir().unwrap();
        let hk = dir.path().join("w/hotkeys");
        std::fs::create_dir_all(&hk).unwrap();
        std::fs::write(hk.join("vault"), b"$ANSIBLE_VAULT;1.1;AES256\n3132").unwrap();
        std::fs::write(hk.join("fernet"), b"gAAAAABkabc").unwrap();
        let mut never = || -> anyhow::Result<Zeroizing<String>> { panic!("no password needed") };
        for (name, word) in [("vault", "ansible-vault"), ("fernet", "Fernet")] {
            let e = format!(
                "{:#}",
                load_wallet_signing_key(dir.path(), "w", name, &mut never)
                    .err()
                    .unwrap()
            );
            assert!(e.contains(word) && e.contains("btcli"), "{e}");
        }
    }

    #[test]
    fn nacl_fixture_decrypts_like_pynacl() {
        let _g = ARGON.lock().unwrap_or_else(|e| e.into_inner());
        let data = std::fs::read(fixture_wallets().join("locked/hotkeys/default")).unwrap();
        assert_eq!(keyfile_format(&data), KeyfileFormat::Nacl);
        let plain = decrypt_nacl_keyfile(&data, PASSWORD.as_bytes()).unwrap();
        let expected = std::fs::read(fixture_wallets().join("plaintext.json")).unwrap();
        assert_eq!(plain.as_slice(), expected.as_slice());
        // (A wrong password is checked through the binary: each try costs a 512 MiB derivation.)
        assert!(decrypt_nacl_keyfile(&data[..30], PASSWORD.as_bytes()).is_err());
    }

    /// What the NATIX stand-in does after a registration POST.
    #[derive(Clone, Copy, PartialEq)]
    enum Mode {
        /// pending, then succeeded.
        Succeed,
        /// non-JSON once, then failed with an error_message.
        Fail,
        /// pending forever.
        Never,
    }

    #[derive(Default)]
    struct Natix {
        registrations: Vec<Value>,
        /// Why a registration was not accepted ("" = it was).
        verdicts: Vec<String>,
        polls: usize,
    }

    fn natix(mode: Mode) -> (String, Arc<Mutex<Natix>>) {
        let st: Arc<Mutex<Natix>> = Arc::default();
        let st2 = st.clone();
        let url = start_server(Arc::new(move |r: &Req| {
            let mut s = st2.lock().unwrap();
            match (r.method.as_str(), r.target.as_str()) {
                ("POST", "/participants/register") => {
                    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
                    let verdict = check_registration(&v);
                    s.registrations.push(v);
                    s.verdicts.push(verdict.clone());
                    if verdict.is_empty() {
                        resp_json(200, json!({"detail": "Registration queued"}))
                    } else {
                        resp_json(400, json!({"detail": verdict}))
                    }
                }
                ("GET", p) if p.starts_with("/participants/registration-status/") => {
                    s.polls += 1;
                    let uid = p.rsplit('/').next().unwrap_or("");
                    let bad = s.verdicts.last().cloned().unwrap_or_default();
                    if !bad.is_empty() {
                        return resp_json(
                            200,
                            json!({"uid": uid, "status": "failed", "error_message": bad}),
                        );
                    }
                    match (mode, s.polls) {
                        (Mode::Succeed, 1) => {
                            resp_json(200, json!({"uid": uid, "status": "pending"}))
                        }
                        (Mode::Succeed, _) => {
                            resp_json(200, json!({"uid": uid, "status": "succeeded"}))
                        }
                        (Mode::Fail, 1) => resp(502, "<html>Bad Gateway</html>"),
                        (Mode::Fail, _) => resp_json(
                            200,
                            json!({"uid": uid, "status": "failed",
                            "error_message": "model repo natix-test/roadwork has no model_card.json"}),
                        ),
                        (Mode::Never, _) => {
                            resp_json(200, json!({"uid": uid, "status": "processing"}))
                        }
                    }
                }
                _ => resp(404, "not found"),
            }
        }));
        (url, st)
    }

    /// The NATIX side's check: fields, timestamp freshness, and the sr25519 signature of the
    /// message by the posted key, in btcli's encoding (hex without 0x, raw message bytes).
    fn check_registration(v: &Value) -> String {
        let (Some(uid), Some(msg), Some(pk), Some(sig)) = (
            v["uid"].as_str(),
            v["message"].as_str(),
            v["natix_public_key"].as_str(),
            v["natix_signature"].as_str(),
        ) else {
            return format!("missing or non-string fields in {v}");
        };
        if uid.parse::<u16>().is_err()
            || v["type"] != "miner"
            || v["model_repo"] != "natix-test/roadwork"
        {
            return format!("bad fields in {v}");
        }
        let Ok(ts) = msg.parse::<i64>() else {
            return format!("message {msg:?} is not a Unix timestamp");
        };
        if (chrono::Utc::now().timestamp() - ts).abs() > 5 {
            return format!("stale timestamp {ts}");
        }
        if sig.starts_with("0x") || sig.len() != 128 {
            return format!("signature {sig:?} is not btcli's 128 hex characters");
        }
        // Strict: the raw message, context "substrate" (what sp-core's sr25519 Pair::verify does).
        let Ok((_, key)) = sv72::keys::ss58_decode(pk) else {
            return "bad public key".into();
        };
        let public = schnorrkel::PublicKey::from_bytes(&key).unwrap();
        let s = schnorrkel::Signature::from_bytes(&hex::decode(sig).unwrap_or_default());
        let ok = s.is_ok_and(|s| {
            public
                .verify_simple(b"substrate", msg.as_bytes(), &s)
                .is_ok()
        });
        if !ok || verify_sr25519(pk, msg.as_bytes(), &format!("0x{sig}")).is_err() {
            return "invalid signature".into();
        }
        String::new()
    }

    /// A wallets folder with hotkey `w/h` holding `json` in plain text.
    fn plain_wallet(json: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let hk = dir.path().join("w/hotkeys");
        std::fs::create_dir_all(&hk).unwrap();
        std::fs::write(hk.join("h"), json).unwrap();
        dir
    }

    fn sv72(args: &[&str], env: &[(&str, &str)]) -> (Output, String) {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sv72"));
        cmd.args(args)
            .env("SV72_NO_PROGRESS", "1")
            .env_remove("SV72_HOTKEY_PASSWORD")
            .current_dir(std::env::temp_dir());
        for (k, v) in env {
            cmd.env(k, v);
        }
        // No controlling terminal, as under cron: a password prompt must not hang the test.
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let out = cmd.output().unwrap();
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out, text)
    }

    fn args<'a>(url: &'a str, wallets: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut a = vec![
            "register",
            "--uid",
            "72",
            "--model-repo",
            "natix-test/roadwork",
            "--endpoint",
            url,
            "--wallets-path",
            wallets,
            "--set",
            "register.poll_interval_s=1",
            "--set",
            "register.timeout_s=3",
        ];
        a.extend_from_slice(extra);
        a
    }

    #[test]
    fn register_plain_seed_succeeds_and_never_prints_the_seed() {
        let (url, st) = natix(Mode::Succeed);
        let w = plain_wallet(&format!(
            r#"{{"secretSeed":"0x{ALICE_SEED}","publicKey":"0x{ALICE_PK}","ss58Address":"{ALICE}"}}"#
        ));
        let wp = w.path().to_str().unwrap();
        let (out, text) = sv72(
            &args(&url, wp, &["--wallet", "w", "--wallet-hotkey", "h"]),
            &[],
        );
        assert_eq!(out.status.code(), Some(0), "{text}");
        let s = st.lock().unwrap();
        assert_eq!(s.verdicts, [""], "{text}");
        assert_eq!(s.registrations[0]["natix_public_key"], ALICE);
        assert_eq!(s.registrations[0]["uid"], "72");
        assert!(s.polls >= 2);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("succeeded"),
            "{text}"
        );
        assert!(!text.contains(ALICE_SEED), "seed leaked: {text}");
    }

    #[test]
    fn register_encrypted_wallet_password_from_env_and_wrong_password() {
        let _g = ARGON.lock().unwrap_or_else(|e| e.into_inner());
        let (url, st) = natix(Mode::Succeed);
        let wallets = fixture_wallets();
        let wp = wallets.to_str().unwrap();
        let extra = ["--set", "serve.wallet_name=locked"];
        let (out, text) = sv72(
            &args(&url, wp, &extra),
            &[("SV72_HOTKEY_PASSWORD", PASSWORD)],
        );
        assert_eq!(out.status.code(), Some(0), "{text}");
        assert_eq!(st.lock().unwrap().verdicts, [""]);
        assert!(
            !text.contains(PASSWORD) && !text.contains(ALICE_SEED),
            "secret leaked: {text}"
        );

        // Wrong password: a clear error, exit 1, nothing sent.
        let (out, text) = sv72(
            &args(&url, wp, &extra),
            &[("SV72_HOTKEY_PASSWORD", "not-it-zebra")],
        );
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(
            text.contains("wrong password") && text.contains("locked/hotkeys/default"),
            "{text}"
        );
        assert!(!text.contains("not-it-zebra"), "{text}");
        assert_eq!(st.lock().unwrap().registrations.len(), 1);

        // No password and no terminal: says which variable to set (no derivation happens).
        let (out, text) = sv72(&args(&url, wp, &extra), &[]);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains("SV72_HOTKEY_PASSWORD"), "{text}");
    }

    #[test]
    fn register_rejected_and_timed_out_exit_codes() {
        let w = plain_wallet(&format!(
            r#"{{"secretPhrase":"{DEV_PHRASE}","ss58Address":"{DEV_SS58}"}}"#
        ));
        let wp = w.path().to_str().unwrap();
        let hk = ["--wallet", "w", "--wallet-hotkey", "h"];

        let (url, st) = natix(Mode::Fail);
        let (out, text) = sv72(&args(&url, wp, &hk), &[]);
        assert_eq!(out.status.code(), Some(3), "{text}");
        assert!(text.contains("has no model_card.json"), "{text}");
        assert!(
            text.contains("non-JSON"),
            "the 502 page is reported: {text}"
        );
        assert_eq!(st.lock().unwrap().verdicts, [""]);

        let (url, st) = natix(Mode::Never);
        let t0 = std::time::Instant::now();
        let (out, text) = sv72(&args(&url, wp, &hk), &[]);
        assert_eq!(out.status.code(), Some(4), "{text}");
        assert!(
            text.contains("timed out") && text.contains("processing"),
            "{text}"
        );
        assert!(t0.elapsed().as_secs_f64() < 10.0);
        assert!(st.lock().unwrap().polls >= 2);
        assert!(
            !text.contains(DEV_SEED) && !text.contains("bottom drive"),
            "{text}"
        );

        // The stand-in's check is real: a payload signed by another key, a stale timestamp or a
        // 0x-prefixed signature are refused.
        let key = SigningKey::from_seed(&seed_bytes(ALICE_SEED)).unwrap();
        let other = SigningKey::from_seed(&[9u8; 32]).unwrap();
        let now = chrono::Utc::now().timestamp().to_string();
        let good =
            sv72::cycle::register::registration_payload(72, &now, &key, "natix-test/roadwork");
        assert_eq!(check_registration(&good), "");
        let mut forged = good.clone();
        forged["natix_public_key"] = json!(other.ss58());
        assert_eq!(check_registration(&forged), "invalid signature");
        let stale = sv72::cycle::register::registration_payload(
            72,
            "1700000000",
            &key,
            "natix-test/roadwork",
        );
        assert!(check_registration(&stale).starts_with("stale"));
        let mut prefixed = good.clone();
        prefixed["natix_signature"] =
            json!(format!("0x{}", good["natix_signature"].as_str().unwrap()));
        assert!(check_registration(&prefixed).contains("btcli"));
    }

    #[test]
    fn register_checks_card_and_inputs_before_sending() {
        let (url, st) = natix(Mode::Succeed);
        let w = plain_wallet(&format!(
            r#"{{"secretSeed":"0x{ALICE_SEED}","ss58Address":"{ALICE}"}}"#
        ));
        let wp = w.path().to_str().unwrap();
        let card = w.path().join("model_card.json");
        std::fs::write(
            &card,
            json!({"model_name": "sv72-roadwork", "description": "d", "version": "1.0.0",
                   "submitted_by": DEV_SS58, "submission_time": 1_700_000_000})
            .to_string(),
        )
        .unwrap();
        let cs = card.to_str().unwrap();
        let hk = ["--wallet", "w", "--wallet-hotkey", "h"];
        let mut a = args(&url, wp, &hk);
        a.extend(["--check-card", "--card", cs]);
        let (out, text) = sv72(&a, &[]);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(
            text.contains("submitted_by") && text.contains(DEV_SS58) && text.contains(ALICE),
            "{text}"
        );
        assert!(st.lock().unwrap().registrations.is_empty());

        std::fs::write(
            &card,
            json!({"model_name": "sv72-roadwork", "description": "d", "version": "1.0.0",
                   "submitted_by": ALICE, "submission_time": 1_700_000_000})
            .to_string(),
        )
        .unwrap();
        let (out, text) = sv72(&a, &[]);
        assert_eq!(out.status.code(), Some(0), "{text}");

        // Bad repo id and missing UID are errors that say what to pass.
        let mut bad = args(&url, wp, &hk);
        bad[4] = "roadwork";
        let (out, text) = sv72(&bad, &[]);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains("ORG/NAME"), "{text}");
        let (out, text) = sv72(
            &["register", "--model-repo", "a/b", "--endpoint", &url],
            &[],
        );
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains("--uid"), "{text}");
        // A public-only hotkey file cannot sign.
        let pubonly = plain_wallet(&format!(r#"{{"ss58Address":"{ALICE}"}}"#));
        let (out, text) = sv72(&args(&url, pubonly.path().to_str().unwrap(), &hk), &[]);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains("no secret"), "{text}");
        assert_eq!(st.lock().unwrap().registrations.len(), 1);
    }
}
