//! The VLM judge against a stand-in chat-completions server on 127.0.0.1: canned answers by
//! image hash, injected latency, HTTP errors, malformed replies, a closed connection. The
//! deadline holds in every case; the breaker opens and closes; the key is sent but never logged.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use sv72::config::JudgeConfig;
use sv72::judge::{Judge, Verdict};

/// What the stand-in does for one image.
#[derive(Clone)]
pub(crate) enum Canned {
    /// 200 with this JSON body after `delay`.
    Reply(serde_json::Value, Duration),
    /// This status with a short body.
    Status(u16),
    /// 200 with a body that is not a chat completion.
    Malformed(&'static str),
    /// Drop the connection without answering.
    Close,
}

pub(crate) fn says(text: &str) -> serde_json::Value {
    serde_json::json!({"choices": [{"message": {"role": "assistant", "content": text}}]})
}

pub(crate) fn logprobs(p_yes: f64) -> serde_json::Value {
    serde_json::json!({"choices": [{
        "message": {"content": if p_yes > 0.5 { "Yes" } else { "No" }},
        "logprobs": {"content": [{"token": "Yes", "logprob": p_yes.ln(), "top_logprobs": [
            {"token": "Yes", "logprob": p_yes.ln()},
            {"token": "No", "logprob": (1.0 - p_yes).ln()}
        ]}]}
    }]})
}

/// The canned key answering for any image not otherwise canned.
const ANY: &str = "*";

/// The stand-in server: answers by the blake3 hash of the image in the data URL.
pub(crate) struct StandIn {
    addr: String,
    pub(crate) calls: Arc<AtomicUsize>,
    auth: Arc<Mutex<Vec<String>>>,
    pub(crate) bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    stop: Arc<AtomicBool>,
}

impl StandIn {
    /// A stand-in answering `reply` for every image.
    pub(crate) fn start_default(reply: Canned) -> Self {
        Self::start(HashMap::from([(ANY.to_string(), reply)]))
    }

    pub(crate) fn start(canned: HashMap<String, Canned>) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let calls = Arc::new(AtomicUsize::new(0));
        let auth = Arc::new(Mutex::new(Vec::new()));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let canned = Arc::new(canned);
        let (c, a, b, s) = (calls.clone(), auth.clone(), bodies.clone(), stop.clone());
        std::thread::spawn(move || {
            // Bounded: at most 60 s and 200 connections.
            let end = Instant::now() + Duration::from_secs(60);
            let mut served = 0;
            while !s.load(Ordering::Relaxed) && Instant::now() < end && served < 200 {
                match l.accept() {
                    Ok((conn, _)) => {
                        served += 1;
                        let (canned, c, a, b, s) =
                            (canned.clone(), c.clone(), a.clone(), b.clone(), s.clone());
                        std::thread::spawn(move || serve_one(conn, &canned, &c, &a, &b, &s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        StandIn {
            addr,
            calls,
            auth,
            bodies,
            stop,
        }
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_one(
    conn: TcpStream,
    canned: &HashMap<String, Canned>,
    calls: &AtomicUsize,
    auth: &Mutex<Vec<String>>,
    bodies: &Mutex<Vec<serde_json::Value>>,
    stop: &AtomicBool,
) {
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut len = 0usize;
    let mut line = String::new();
    for _ in 0..100 {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("authorization:") {
            auth.lock()
                .unwrap()
                .push(line["authorization:".len()..].trim().to_string());
        }
    }
    let mut body = vec![0u8; len];
    if r.read_exact(&mut body).is_err() {
        return;
    }
    calls.fetch_add(1, Ordering::Relaxed);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    bodies.lock().unwrap().push(json.clone());
    let url = json
        .pointer("/messages/0/content/1/image_url/url")
        .and_then(|u| u.as_str())
        .unwrap_or("");
    let b64 = url.split_once("base64,").map(|x| x.1).unwrap_or("");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_default();
    let hash = blake3::hash(&bytes).to_hex().to_string();
    let mut w = conn;
    let respond = |w: &mut TcpStream, status: u16, body: &str| {
        let _ = write!(
            w,
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    };
    let reply = canned.get(&hash).or_else(|| canned.get(ANY)).cloned();
    match reply.unwrap_or(Canned::Status(404)) {
        Canned::Reply(v, delay) => {
            // Sleep in small steps so a stopped stand-in lets its threads go.
            let end = Instant::now() + delay;
            while Instant::now() < end && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
            respond(&mut w, 200, &v.to_string());
        }
        Canned::Status(s) => respond(&mut w, s, "{\"error\": \"canned\"}"),
        Canned::Malformed(text) => respond(&mut w, 200, text),
        Canned::Close => {}
    }
}

fn image(tag: u8) -> (Vec<u8>, String) {
    // Any bytes: the judge sends what it received; the stand-in hashes them.
    let bytes = vec![0xFF, 0xD8, tag, tag, tag];
    let hash = blake3::hash(&bytes).to_hex().to_string();
    (bytes, hash)
}

fn config(endpoint: String, log: &Path) -> JudgeConfig {
    JudgeConfig {
        endpoint,
        model: "stand-in-vl".into(),
        band: [0.3, 0.7],
        weight: 0.5,
        timeout_ms: 3000,
        reserve_ms: 200,
        breaker_failures: 3,
        breaker_cooldown_ms: 300,
        log: log.to_path_buf(),
        ..Default::default()
    }
}

fn read_log(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn canned_answers_are_blended_cached_and_logged_with_the_key_kept_secret() {
    let t = tempfile::tempdir().unwrap();
    let (yes, hy) = image(1);
    let (lp, hl) = image(2);
    let (no, hn) = image(3);
    let server = StandIn::start(HashMap::from([
        (hy.clone(), Canned::Reply(says("Yes."), Duration::ZERO)),
        (hl.clone(), Canned::Reply(logprobs(0.8), Duration::ZERO)),
        (hn.clone(), Canned::Reply(says("no"), Duration::ZERO)),
    ]));
    let secret = "sk-test-0123456789-very-secret";
    std::env::set_var("SV72_JUDGE_TEST_KEY_A", secret);
    let log = t.path().join("logs/judge.jsonl");
    let mut cfg = config(server.endpoint(), &log);
    cfg.api_key_env = "SV72_JUDGE_TEST_KEY_A".into();
    let j = Judge::from_config(&cfg).unwrap().unwrap();
    let dl = || Instant::now() + Duration::from_secs(5);

    // Out of band: no call.
    let out = j.judge(&yes, &hy, 0.95, dl());
    assert_eq!(out.answer, 0.95);
    assert_eq!(out.verdict, Verdict::Confident);
    assert_eq!(server.calls.load(Ordering::Relaxed), 0);

    // "Yes." = answer_confidence 0.9; blend 0.5 * 0.4 + 0.5 * 0.9 = 0.65.
    let out = j.judge(&yes, &hy, 0.4, dl());
    assert!((out.answer - 0.65).abs() < 1e-6, "{out:?}");
    assert_eq!(
        out.verdict,
        Verdict::Judged {
            judge: 0.9,
            cached: false
        }
    );
    // logprobs 0.8 beside base 0.6 → 0.7.
    let out = j.judge(&lp, &hl, 0.6, dl());
    assert!((out.answer - 0.7).abs() < 1e-5, "{out:?}");
    // "no" → 0.1 beside 0.5 → 0.3.
    let out = j.judge(&no, &hn, 0.5, dl());
    assert!((out.answer - 0.3).abs() < 1e-6, "{out:?}");
    assert_eq!(server.calls.load(Ordering::Relaxed), 3);
    // Second time: from the cache, no call.
    let out = j.judge(&yes, &hy, 0.3, dl());
    assert_eq!(
        out.verdict,
        Verdict::Judged {
            judge: 0.9,
            cached: true
        }
    );
    assert_eq!(server.calls.load(Ordering::Relaxed), 3);

    // The request: the prompt, the image as a data URL, logprobs asked, the key as a bearer.
    let bodies = server.bodies.lock().unwrap().clone();
    let b = &bodies[0];
    assert_eq!(b["model"], "stand-in-vl");
    assert!(b
        .pointer("/messages/0/content/0/text")
        .unwrap()
        .as_str()
        .unwrap()
        .contains("roadwork"));
    assert!(b
        .pointer("/messages/0/content/1/image_url/url")
        .unwrap()
        .as_str()
        .unwrap()
        .starts_with("data:image/jpeg;base64,"));
    assert_eq!(b["logprobs"], true);
    assert!(server
        .auth
        .lock()
        .unwrap()
        .iter()
        .all(|a| a == &format!("Bearer {secret}")));

    // Every judged answer logged with both opinions; the key nowhere.
    let lines = read_log(&log);
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[0]["base"].as_f64().unwrap() as f32, 0.4);
    assert_eq!(lines[0]["judge"], 0.9);
    assert_eq!(lines[0]["outcome"], "judged");
    assert_eq!(lines[3]["cached"], true);
    let raw = std::fs::read_to_string(&log).unwrap();
    assert!(!raw.contains(secret));
    assert!(!format!("{j:?}").contains(secret));
}

#[test]
fn slow_failing_and_malformed_endpoints_give_the_base_answer_in_time() {
    let t = tempfile::tempdir().unwrap();
    let cases: Vec<(u8, Canned, &str)> = vec![
        (
            10,
            Canned::Reply(says("yes"), Duration::from_secs(20)),
            "late",
        ),
        (11, Canned::Status(500), "HTTP 500"),
        (12, Canned::Malformed("<html>oops</html>"), "not JSON"),
        (
            13,
            Canned::Reply(says("perhaps"), Duration::ZERO),
            "neither yes nor no",
        ),
        (
            14,
            Canned::Reply(serde_json::json!({"choices": []}), Duration::ZERO),
            "choices[0]",
        ),
        (15, Canned::Close, "failed"),
    ];
    let server = StandIn::start(
        cases
            .iter()
            .map(|(tag, c, _)| (image(*tag).1, c.clone()))
            .collect(),
    );
    let log = t.path().join("judge.jsonl");
    let mut cfg = config(server.endpoint(), &log);
    // Never opens here: each case must reach the endpoint.
    cfg.breaker_failures = 100;
    let j = Judge::from_config(&cfg).unwrap().unwrap();
    for (tag, _, want) in &cases {
        let (bytes, hash) = image(*tag);
        let start = Instant::now();
        let budget = Duration::from_millis(900);
        let out = j.judge(&bytes, &hash, 0.45, start + budget);
        let took = start.elapsed();
        assert_eq!(out.answer, 0.45, "case {tag}");
        match &out.verdict {
            Verdict::Unjudged { reason } => assert!(reason.contains(want), "case {tag}: {reason}"),
            v => panic!("case {tag}: {v:?}"),
        }
        // The answer is ready before the deadline minus the reserve (plus scheduling slack).
        assert!(
            took <= budget - Duration::from_millis(cfg.reserve_ms) + Duration::from_millis(150),
            "case {tag} took {took:?}"
        );
    }
    // No time left at all: not even a call.
    let (bytes, hash) = image(10);
    let before = server.calls.load(Ordering::Relaxed);
    let out = j.judge(
        &bytes,
        &hash,
        0.5,
        Instant::now() + Duration::from_millis(100),
    );
    assert_eq!(
        out.verdict,
        Verdict::Unjudged {
            reason: "no_time".into()
        }
    );
    assert_eq!(server.calls.load(Ordering::Relaxed), before);
    assert_eq!(read_log(&log).len(), cases.len() + 1);
}

#[test]
fn endpoint_slowed_to_20s_never_holds_an_answer_past_the_validator_budget() {
    let (slow, hs) = image(20);
    let server = StandIn::start(HashMap::from([(
        hs.clone(),
        Canned::Reply(says("yes"), Duration::from_secs(20)),
    )]));
    let t = tempfile::tempdir().unwrap();
    let mut cfg = config(server.endpoint(), &t.path().join("j.jsonl"));
    cfg.max_concurrency = 8;
    cfg.breaker_failures = 1000;
    let j = Judge::from_config(&cfg).unwrap().unwrap();
    // Eight concurrent requests, each with a different remaining deadline (as when they
    // waited in the queue for different times); every one is answered before its deadline.
    let handles: Vec<_> = (0..8u64)
        .map(|i| {
            let (j, slow, hs) = (j.clone(), slow.clone(), hs.clone());
            std::thread::spawn(move || {
                let start = Instant::now();
                let deadline = start + Duration::from_millis(400 + 100 * i);
                let out = j.judge(&slow, &hs, 0.5, deadline);
                (Instant::now() <= deadline, out.answer, start.elapsed())
            })
        })
        .collect();
    for h in handles {
        let (in_time, answer, took) = h.join().unwrap();
        assert!(in_time, "late: {took:?}");
        assert_eq!(answer, 0.5);
    }
}

#[test]
fn breaker_opens_on_failures_and_closes_after_a_good_trial() {
    let (bad, hb) = image(30);
    let (good, hg) = image(31);
    let server = StandIn::start(HashMap::from([
        (hb.clone(), Canned::Status(503)),
        (hg.clone(), Canned::Reply(says("yes"), Duration::ZERO)),
    ]));
    let t = tempfile::tempdir().unwrap();
    let mut cfg = config(server.endpoint(), &t.path().join("j.jsonl"));
    cfg.cache_entries = 0;
    let j = Judge::from_config(&cfg).unwrap().unwrap();
    let dl = || Instant::now() + Duration::from_secs(3);
    for _ in 0..3 {
        assert!(matches!(
            j.judge(&bad, &hb, 0.5, dl()).verdict,
            Verdict::Unjudged { .. }
        ));
    }
    assert_eq!(j.breaker_state(), "open");
    let calls = server.calls.load(Ordering::Relaxed);
    assert_eq!(calls, 3);
    // Open: even a good image is not sent.
    let out = j.judge(&good, &hg, 0.5, dl());
    assert_eq!(
        out.verdict,
        Verdict::Unjudged {
            reason: "breaker_open".into()
        }
    );
    assert_eq!(server.calls.load(Ordering::Relaxed), calls);
    // After the cooldown one trial goes out; it succeeds and the breaker closes.
    std::thread::sleep(Duration::from_millis(cfg.breaker_cooldown_ms + 50));
    let out = j.judge(&good, &hg, 0.5, dl());
    assert!(matches!(out.verdict, Verdict::Judged { .. }), "{out:?}");
    assert_eq!(j.breaker_state(), "closed");
    // A failed trial after the next opening opens it again.
    for _ in 0..3 {
        j.judge(&bad, &hb, 0.5, dl());
    }
    std::thread::sleep(Duration::from_millis(cfg.breaker_cooldown_ms + 50));
    j.judge(&bad, &hb, 0.5, dl());
    assert_eq!(j.breaker_state(), "open");
}

#[test]
fn concurrency_cap_answers_unjudged_when_full() {
    let (slow, hs) = image(40);
    let (fast, hf) = image(41);
    let server = StandIn::start(HashMap::from([
        (
            hs.clone(),
            Canned::Reply(says("yes"), Duration::from_millis(800)),
        ),
        (hf.clone(), Canned::Reply(says("yes"), Duration::ZERO)),
    ]));
    let t = tempfile::tempdir().unwrap();
    let mut cfg = config(server.endpoint(), &t.path().join("j.jsonl"));
    cfg.max_concurrency = 1;
    let j = Judge::from_config(&cfg).unwrap().unwrap();
    let j2 = j.clone();
    let h = std::thread::spawn(move || {
        j2.judge(&slow, &hs, 0.5, Instant::now() + Duration::from_secs(3))
    });
    // Wait (bounded) until the slow call reached the stand-in.
    let end = Instant::now() + Duration::from_secs(3);
    while server.calls.load(Ordering::Relaxed) == 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = j.judge(&fast, &hf, 0.5, Instant::now() + Duration::from_secs(3));
    assert_eq!(
        out.verdict,
        Verdict::Unjudged {
            reason: "busy".into()
        }
    );
    assert!(matches!(h.join().unwrap().verdict, Verdict::Judged { .. }));
    // The slot is free again.
    assert!(matches!(
        j.judge(&fast, &hf, 0.5, Instant::now() + Duration::from_secs(3))
            .verdict,
        Verdict::Judged { .. }
    ));
}

/// `mine-hard --judge`: the judge's opinion of every candidate; disagreeing with model A is a
/// reason of its own, and its answer lands in the CSV as a suggestion beside the label, which
/// stays the model's (or the known) label.
#[test]
fn mine_hard_judge_marks_disagreements_and_suggests_labels() {
    use sv72::cycle::mine::{self, Criteria, Distance, ServeInput, Settings};
    let dir = tempfile::tempdir().unwrap();
    let low = dir.path().join("low_confidence");
    std::fs::create_dir_all(&low).unwrap();
    let fixture = |n: &str| crate::common::fixture(&format!("images/{n}"));
    std::fs::copy(fixture("rgb_224x224.jpg"), low.join("a.img")).unwrap();
    std::fs::copy(fixture("rgb_300x500.png"), low.join("b.img")).unwrap();
    std::fs::copy(fixture("rgb_640x480.jpg"), low.join("c.img")).unwrap();
    let hash = |n: &str| sv72::util::hash::file_hash(&low.join(n)).unwrap();
    // a: model 0.45, judge 0.95 → disagreement; b: model 0.58, judge "yes" (0.9) → agrees;
    // c: the judge fails → no opinion.
    let server = StandIn::start(HashMap::from([
        (hash("a.img"), Canned::Reply(logprobs(0.95), Duration::ZERO)),
        (hash("b.img"), Canned::Reply(says("yes"), Duration::ZERO)),
        (hash("c.img"), Canned::Status(500)),
    ]));
    let log = dir.path().join("p.jsonl");
    let mut text = String::new();
    for (h, p) in [("a", 0.45), ("b", 0.58), ("c", 0.55)] {
        text += &serde_json::json!({"time": "2026-11-20T00:00:00Z", "image_hash": h,
            "prediction": p, "saved_image": low.join(format!("{h}.img")).display().to_string()})
        .to_string();
        text.push('\n');
    }
    std::fs::write(&log, text).unwrap();
    let settings = Settings {
        criteria: Criteria {
            band: [0.3, 0.7],
            min_disagreement: 0.2,
        },
        max_cases: 10,
        seed: 72,
        distance: Distance::Cosine,
        contact_sheet_max: 64,
        datasets_root: dir.path().join("datasets"),
        limits: sv72::data::decode::DecodeLimits {
            max_pixels: 50_000_000,
            max_file_bytes: 50_000_000,
        },
        judge: None,
    };
    let serve = ServeInput {
        log: log.clone(),
        read: sv72::serve::predlog::read_prediction_log(&log, None).unwrap(),
    };
    let mut cfg = config(server.endpoint(), &dir.path().join("j.jsonl"));
    cfg.breaker_failures = 100;
    let settings = Settings {
        judge: Judge::from_config(&cfg).unwrap(),
        ..settings
    };
    let out = dir.path().join("hard");
    let s = mine::mine(Some(serve), None, None, None, "--no-embed", &settings, &out).unwrap();
    assert_eq!(s.by_reason["judge_disagreement"], [1, 1]);
    assert!(
        s.inputs.iter().any(|l| l.contains("2 of 3 answered")),
        "{:?}",
        s.inputs
    );
    assert!(
        s.skipped.keys().any(|k| k.contains("HTTP 500")),
        "{:?}",
        s.skipped
    );
    let mut rdr = csv::Reader::from_path(out.join("hard_cases.csv")).unwrap();
    let head: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    let col = |n: &str| head.iter().position(|h| h == n).unwrap();
    let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 3);
    // The disagreement ranks first; its label stays the model's answer, the judge's is a
    // suggestion in its own columns; no known label is invented.
    let a = &rows[0];
    assert_eq!(&a[col("reasons")], "judge_disagreement;uncertain");
    assert_eq!(&a[col("label")], "0");
    assert_eq!(&a[col("known_label")], "");
    assert_eq!(&a[col("p_judge")], "0.950000");
    assert_eq!(&a[col("judge_suggested_label")], "1");
    let by_p = |p: &str| rows.iter().find(|r| &r[col("p_a")] == p).unwrap();
    assert_eq!(&by_p("0.580000")[col("p_judge")], "0.900000");
    assert_eq!(&by_p("0.580000")[col("reasons")], "uncertain");
    assert_eq!(&by_p("0.550000")[col("p_judge")], "");
    assert_eq!(&by_p("0.550000")[col("judge_suggested_label")], "");
    assert_eq!(server.calls.load(Ordering::Relaxed), 3);

    // The flag without a configured endpoint is a clear error naming the key.
    let log_arg = log.display().to_string();
    let o = crate::common::sv72(
        dir.path(),
        &[
            "mine-hard",
            "--judge",
            "--no-embed",
            "--serve-log",
            &log_arg,
            "--out",
            "h2",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("judge.endpoint"), "{err}");
}

fn fit_cases(base: impl Fn(bool) -> f64) -> Vec<sv72::judge::FitCase> {
    (0..20u8)
        .map(|i| {
            let (image, hash) = image(100 + i);
            let pos = i % 2 == 0;
            sv72::judge::FitCase {
                image,
                hash,
                base: base(pos),
                label: u8::from(pos),
            }
        })
        .collect()
}

#[test]
fn fitted_weight_is_one_for_a_judge_that_is_always_right_and_zero_for_a_useless_one() {
    let t = tempfile::tempdir().unwrap();
    // Always right beside a weak base (0.55 / 0.45): the judge takes the whole weight.
    let cases = fit_cases(|pos| if pos { 0.55 } else { 0.45 });
    let right: HashMap<String, Canned> = cases
        .iter()
        .map(|c| {
            let p = if c.label == 1 { 0.97 } else { 0.03 };
            (c.hash.clone(), Canned::Reply(logprobs(p), Duration::ZERO))
        })
        .collect();
    let server = StandIn::start(right);
    let j = Judge::from_config(&config(server.endpoint(), &t.path().join("a.jsonl")))
        .unwrap()
        .unwrap();
    let start = Instant::now();
    let fit = j.fit_weight_by_asking(&cases).unwrap();
    assert!(fit.weight >= 0.95, "{fit:?}");
    assert_eq!((fit.asked, fit.judged), (20, 20), "{fit:?}");
    assert_eq!(server.calls.load(Ordering::Relaxed), 20);
    assert!(start.elapsed() < Duration::from_secs(20));

    // Useless (always 0.5) beside an informative base (0.8 / 0.2): weight 0.
    let cases = fit_cases(|pos| if pos { 0.8 } else { 0.2 });
    let useless: HashMap<String, Canned> = cases
        .iter()
        .map(|c| (c.hash.clone(), Canned::Reply(logprobs(0.5), Duration::ZERO)))
        .collect();
    let server = StandIn::start(useless);
    let j = Judge::from_config(&config(server.endpoint(), &t.path().join("b.jsonl")))
        .unwrap()
        .unwrap();
    let fit = j.fit_weight_by_asking(&cases).unwrap();
    assert_eq!(fit.weight, 0.0, "{fit:?}");

    // A judge that never answers fits nothing: an error, not a guessed weight.
    let server = StandIn::start(HashMap::new());
    let mut cfg = config(server.endpoint(), &t.path().join("c.jsonl"));
    cfg.breaker_failures = 100;
    let j = Judge::from_config(&cfg).unwrap().unwrap();
    let e = format!("{:#}", j.fit_weight_by_asking(&cases).unwrap_err());
    assert!(
        e.contains("none of the 20") && e.contains("HTTP 404"),
        "{e}"
    );
}

/// `calibrate --judge` end to end: the judge is asked about at most `--judge-max-cases`
/// in-band validation challenges (JPEGs, as a validator sends), its weight lands in the spec,
/// `serve`'s judge prefers it over `judge.weight` (unless the band changed since), and a plain recalibration drops it.
#[test]
fn calibrate_judge_fits_stores_and_serves_the_weight() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    crate::common::demo_mix(d, 16);
    let bb = format!(
        "backbone.model={}",
        crate::common::fixture("backbones/dinov2_reg4_s36").display()
    );
    let run = |args: &[&str]| {
        let all: Vec<&str> = ["--set", bb.as_str()]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        let out = crate::common::sv72(d, &all);
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, text) = run(&crate::common::QUICK_HEAD);
    assert_eq!(code, Some(0), "{text}");
    std::fs::write(d.join("s.yaml"), "model: checkpoints/latest\n").unwrap();

    // A stand-in that says "yes" (0.99) to every image: no use to anyone.
    let server = StandIn::start_default(Canned::Reply(logprobs(0.99), Duration::ZERO));
    let ep = format!("judge.endpoint={}", server.endpoint());
    let judged = [
        "--set",
        ep.as_str(),
        "--set",
        "judge.band=[0.0,1.0]",
        "--set",
        "judge.log=''",
        "calibrate",
        "s.yaml",
        "--on",
        "mix",
        "--judge",
        "--judge-max-cases",
        "12",
    ];
    let (code, text) = run(&judged);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("judge weight"), "{text}");
    let calls = server.calls.load(Ordering::Relaxed);
    assert!((1..=12).contains(&calls), "{calls} calls\n{text}");
    let spec = sv72::infer::ModelSpec::read(&d.join("s.yaml")).unwrap();
    let fit = spec.judge.clone().expect("the spec stores the judge fit");
    assert_eq!(fit.judged, calls, "{fit:?}");
    assert_eq!(fit.band, [0.0, 1.0]);
    assert!(fit.weight <= 0.15, "a yes-to-everything judge got {fit:?}");
    // Every image sent was a JPEG of a challenge.
    for b in server.bodies.lock().unwrap().iter() {
        let url = b
            .pointer("/messages/0/content/1/image_url/url")
            .and_then(|u| u.as_str())
            .unwrap();
        assert!(url.starts_with("data:image/jpeg;base64,"), "{}", &url[..40]);
    }

    // serve's judge takes the spec's weight, not judge.weight.
    let cfg = JudgeConfig {
        weight: 0.9,
        model: fit.model.clone(),
        band: fit.band,
        ..config(server.endpoint(), &d.join("j.jsonl"))
    };
    let j = Judge::for_model(&cfg, &d.join("s.yaml")).unwrap().unwrap();
    assert_eq!(j.weight(), fit.weight);
    let j = Judge::for_model(&cfg, &d.join("checkpoints/latest"))
        .unwrap()
        .unwrap();
    assert_eq!(j.weight(), 0.9);
    // A fit made for another band says nothing about this one: judge.weight is used.
    let other_band = JudgeConfig {
        band: [0.2, 0.8],
        ..cfg.clone()
    };
    let j = Judge::for_model(&other_band, &d.join("s.yaml"))
        .unwrap()
        .unwrap();
    assert_eq!(j.weight(), 0.9);

    // Recalibrated without --judge: the old weight no longer fits the answers; it is dropped.
    let (code, text) = run(&["calibrate", "s.yaml", "--on", "mix"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("dropped"), "{text}");
    assert!(sv72::infer::ModelSpec::read(&d.join("s.yaml"))
        .unwrap()
        .judge
        .is_none());
    // --judge without an endpoint names the key.
    let (code, text) = run(&["calibrate", "s.yaml", "--on", "mix", "--judge"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("judge.endpoint"), "{text}");
}
