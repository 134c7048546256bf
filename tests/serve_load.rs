//! `make serve-check`: `sv72 serve` under load and under attack. Every test here is ignored in
//! `make test` (heavy); run them with
//! `cargo test --release --test main serve_load:: -- --ignored --nocapture --test-threads=1`.
//!
//! All traffic stays on 127.0.0.0/8: clients bind 127.0.0.2, 127.0.0.3, … to act as distinct
//! sources. Every loop is bounded in count and in time. Each test prints p50/p99 latency, req/s,
//! errors and peak RSS, and asserts the goals of issue #12:
//! - c=32 × 1,000 signed queries from one shared dendrite-style signer: 0 errors, 0 nonce
//!   rejections;
//! - 1,100 slow connections (one source, then many): queries from another source answer with
//!   p99 < 1 s;
//! - 16 concurrent decompression bombs: peak RSS < 1 GB, every answer inside 9 s;
//! - `kill -9` at any point leaves a prediction log of whole lines only;
//! - with a cheap predictor, ≥ 4× the official Python axon's throughput (when SV72_ANCHOR_PYTHON
//!   names a Python with bittensor 9.12.2; see tools/anchor_axon.py).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;
use sv72::config::ServeConfig;
use sv72::serve::protocol::now_ns;
use sv72::serve::{Metrics, ServeOptions};

use crate::serve::{
    connect_from, image_b64, keys, neurons, start_with, synapse_body, Keys, MeanRed, Req, Resp,
    Signed,
};

// ---------- measuring ----------

/// Latency summary of one run.
#[derive(Debug, Clone, Default)]
struct Stats {
    sent: usize,
    ok: usize,
    errors: usize,
    nonce_rejections: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    req_s: f64,
    first_errors: Vec<String>,
}

impl Stats {
    fn from(lat: &mut [Duration], wall: Duration, errors: &[String]) -> Self {
        lat.sort();
        let q = |p: f64| {
            if lat.is_empty() {
                return 0.0;
            }
            let i = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1;
            lat[i].as_secs_f64() * 1e3
        };
        Stats {
            sent: lat.len() + errors.len(),
            ok: lat.len(),
            errors: errors.len(),
            nonce_rejections: errors.iter().filter(|e| e.contains("Nonce")).count(),
            p50_ms: q(0.50),
            p99_ms: q(0.99),
            max_ms: lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
            req_s: lat.len() as f64 / wall.as_secs_f64().max(1e-9),
            first_errors: errors.iter().take(5).cloned().collect(),
        }
    }

    fn line(&self, what: &str) -> String {
        format!(
            "{what:<44} {:>5} ok {:>4} err ({:>3} nonce)  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.1} ms  {:>6.0} req/s",
            self.ok, self.errors, self.nonce_rejections, self.p50_ms, self.p99_ms, self.max_ms, self.req_s
        )
    }
}

/// `VmHWM` (peak RSS) and `VmRSS` of a process in MiB, from /proc.
fn rss_mib(pid: &str) -> (f64, f64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// User + system CPU seconds a process has used, from /proc/<pid>/stat.
fn cpu_seconds(pid: &str) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz.max(1.0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

// ---------- a keep-alive client that never panics ----------

fn write_req(s: &mut TcpStream, r: &Req, keep_alive: bool) -> std::io::Result<()> {
    let mut head = format!("{} {} HTTP/1.1\r\nHost: 127.0.0.1\r\n", r.method, r.path);
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n", r.body.len()));
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut all = head.into_bytes();
    all.extend_from_slice(&r.body);
    s.write_all(&all)
}

fn read_resp(reader: &mut BufReader<TcpStream>) -> std::io::Result<Resp> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "server closed the connection",
        ));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = std::collections::HashMap::new();
    loop {
        let mut l = String::new();
        reader.read_line(&mut l)?;
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let n: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; n];
    reader.read_exact(&mut body)?;
    Ok(Resp {
        status,
        headers,
        body,
    })
}

struct Client {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr, source: Option<u8>) -> std::io::Result<Self> {
        let s = match source {
            Some(last) => connect_from(last, addr)?,
            None => TcpStream::connect_timeout(&addr, Duration::from_secs(5))?,
        };
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        s.set_nodelay(true)?;
        Ok(Self {
            w: s.try_clone()?,
            r: BufReader::new(s),
        })
    }

    fn call(&mut self, req: &Req, keep_alive: bool) -> std::io::Result<Resp> {
        write_req(&mut self.w, req, keep_alive)?;
        read_resp(&mut self.r)
    }
}

/// What an answer must be: 200 with a prediction in [0, 1]; otherwise the error text.
fn check(r: std::io::Result<Resp>) -> Result<f64, String> {
    match r {
        Err(e) => Err(format!("transport: {e}")),
        Ok(r) if r.status != 200 => Err(format!(
            "{}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        )),
        Ok(r) => {
            let v: Value = serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
            match v["prediction"].as_f64() {
                Some(p) if (0.0..=1.0).contains(&p) => Ok(p),
                other => Err(format!("prediction {other:?}")),
            }
        }
    }
}

// ---------- signers ----------

/// Who signs: one shared dendrite (one uuid, nonces from one clock, strictly increasing, as
/// bittensor's single event loop makes them) or a dendrite of its own per worker.
#[derive(Clone)]
enum Signer {
    Shared(Arc<Dendrite>),
    PerWorker,
}

struct Dendrite {
    uuid: String,
    last: Mutex<u64>,
}

impl Dendrite {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            uuid: format!("{:08x}-e841-11f1-8d63-02fc00000001", rand::random::<u32>()),
            last: Mutex::new(0),
        })
    }
    fn nonce(&self) -> u64 {
        let mut l = self.last.lock().unwrap();
        *l = (now_ns() as u64).max(*l + 1);
        *l
    }
}

/// Builds signed queries for an axon hotkey.
struct Queries {
    keys: Keys,
    axon_hotkey: String,
    image: String,
}

impl Queries {
    fn new(axon_hotkey: String) -> Arc<Self> {
        Arc::new(Self {
            keys: keys(),
            axon_hotkey,
            image: image_b64(),
        })
    }

    fn build(&self, dendrite: &Dendrite, image: Option<&str>) -> Req {
        let mut s = Signed::new(&self.keys.validator, &self.keys.axon);
        s.sign_for = self.axon_hotkey.clone();
        s.axon_header = self.axon_hotkey.clone();
        s.uuid = dendrite.uuid.clone();
        s.nonce = dendrite.nonce();
        let body = synapse_body(
            &self.keys.validator,
            &self.keys.axon,
            s.nonce,
            &s.uuid,
            image.unwrap_or(&self.image),
        );
        s.build(body)
    }
}

/// `total` signed queries from `workers` keep-alive connections; stops at `time_limit`.
fn signed_load(
    addr: SocketAddr,
    q: &Arc<Queries>,
    workers: usize,
    total: usize,
    signer: Signer,
    source: Option<u8>,
    time_limit: Duration,
) -> Stats {
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let (q, next, signer) = (q.clone(), next.clone(), signer.clone());
            std::thread::spawn(move || {
                let own = Dendrite::new();
                let dendrite = match &signer {
                    Signer::Shared(d) => d.clone(),
                    Signer::PerWorker => own,
                };
                let (mut lat, mut errs) = (Vec::new(), Vec::new());
                let mut client: Option<Client> = None;
                while next.fetch_add(1, Ordering::Relaxed) < total && t0.elapsed() < time_limit {
                    let req = q.build(&dendrite, None);
                    let t = Instant::now();
                    let c = match client.take() {
                        Some(c) => Ok(c),
                        None => Client::connect(addr, source),
                    };
                    let r = c.and_then(|mut c| {
                        let r = c.call(&req, true);
                        if r.is_ok() {
                            client = Some(c);
                        }
                        r
                    });
                    match check(r) {
                        Ok(_) => lat.push(t.elapsed()),
                        Err(e) => errs.push(e),
                    }
                }
                (lat, errs)
            })
        })
        .collect();
    let (mut lat, mut errs) = (Vec::new(), Vec::new());
    for h in handles {
        let (l, e) = h.join().unwrap();
        lat.extend(l);
        errs.extend(e);
    }
    Stats::from(&mut lat, t0.elapsed(), &errs)
}

fn local_options(k: &Keys, cfg: ServeConfig) -> ServeOptions {
    let cfg = ServeConfig {
        host: "127.0.0.1".into(),
        port: 0,
        ..cfg
    };
    let mut o = ServeOptions::from_config(&cfg, k.axon.ss58()).unwrap();
    o.prediction_log = None;
    o
}

fn self_pid() -> String {
    std::process::id().to_string()
}

// ---------- signed load ----------

/// c=8 and c=32 × 1,000 signed queries, one shared dendrite-style signer and one per worker.
#[test]
#[ignore]
fn signed_load_shared_and_many_signers() {
    let k = keys();
    let (server, _slot) = start_with(
        &k,
        Box::new(MeanRed),
        local_options(&k, ServeConfig::default()),
    );
    let addr = server.addr();
    let q = Queries::new(k.axon.ss58());
    let cpu0 = cpu_seconds(&self_pid());
    println!("\nsigned load, in-process server (cheap predictor), keep-alive connections:");
    let mut shared32 = Stats::default();
    for workers in [8, 32] {
        for shared in [true, false] {
            let signer = if shared {
                Signer::Shared(Dendrite::new())
            } else {
                Signer::PerWorker
            };
            let c0 = cpu_seconds(&self_pid());
            let s = signed_load(
                addr,
                &q,
                workers,
                1000,
                signer,
                None,
                Duration::from_secs(120),
            );
            let cpu = cpu_seconds(&self_pid()) - c0;
            let what = format!(
                "c={workers} x 1000, {}",
                if shared {
                    "one shared signer/uuid"
                } else {
                    "one signer per worker"
                }
            );
            println!("{}  (process CPU {cpu:.1} s)", s.line(&what));
            if !s.first_errors.is_empty() {
                println!("    first errors: {:?}", s.first_errors);
            }
            assert_eq!(s.sent, 1000, "{what}: not every query was sent in time");
            assert_eq!(s.errors, 0, "{what}: {:?}", s.first_errors);
            if shared && workers == 32 {
                shared32 = s;
            }
        }
    }
    let m = server.metrics().clone();
    println!(
        "nonces accepted out of order: {}; nonce rejections: {}; peak RSS (whole test process) {:.0} MiB; CPU {:.1} s",
        m.nonces_reordered.load(Ordering::Relaxed),
        m.rejections("stale_nonce") + m.rejections("replayed_nonce"),
        rss_mib(&self_pid()).0,
        cpu_seconds(&self_pid()) - cpu0
    );
    assert_eq!(shared32.nonce_rejections, 0);
    assert_eq!(
        m.rejections("stale_nonce") + m.rejections("replayed_nonce"),
        0
    );
    server.shutdown().unwrap();
}

// ---------- slow connections ----------

/// Holds up to `n` connections from `sources` (round robin), each sending one byte of a head
/// that never ends every second, reconnecting what the server closes (at most once a second
/// each), until `stop`.
fn slow_attack(
    addr: SocketAddr,
    n: usize,
    sources: Vec<u8>,
    stop: Arc<AtomicBool>,
    held_peak: Arc<AtomicU64>,
) -> std::thread::JoinHandle<(u64, u64)> {
    std::thread::spawn(move || {
        let mut slots: Vec<Option<TcpStream>> = (0..n).map(|_| None).collect();
        let (mut connects, mut closed) = (0u64, 0u64);
        let head = b"POST /ImageSynapse HTTP/1.1\r\nHost: x\r\nx-pad: ";
        let mut round = 0usize;
        let t0 = Instant::now();
        // Bounded: at most 120 rounds (~2 min) whatever `stop` says.
        while !stop.load(Ordering::Relaxed) && round < 120 {
            let started = Instant::now();
            for (i, slot) in slots.iter_mut().enumerate() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if slot.is_none() {
                    let src = sources[i % sources.len()];
                    if let Ok(s) = connect_from(src, addr) {
                        let _ = s.set_nonblocking(true);
                        connects += 1;
                        *slot = Some(s);
                    }
                }
                let Some(s) = slot.as_mut() else { continue };
                let mut b = [0u8; 64];
                let gone = match s.read(&mut b) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                };
                let byte = head[round.min(head.len() - 1)];
                if gone || s.write(&[byte]).is_err() {
                    closed += 1;
                    *slot = None;
                }
            }
            let held = slots.iter().filter(|s| s.is_some()).count() as u64;
            held_peak.fetch_max(held, Ordering::Relaxed);
            round += 1;
            let spent = started.elapsed();
            if spent < Duration::from_secs(1) {
                std::thread::sleep(Duration::from_secs(1) - spent);
            }
            let _ = t0;
        }
        (connects, closed)
    })
}

/// Queries from `source` for `duration` while slow connections are held, one every 50 ms from
/// each of three workers: two on keep-alive connections, one on a new connection per query
/// (what a validator's first query of a round does). At most 1,000 queries.
fn queries_under_attack(
    addr: SocketAddr,
    q: &Arc<Queries>,
    source: u8,
    duration: Duration,
) -> Stats {
    let t0 = Instant::now();
    let left = Arc::new(AtomicUsize::new(1000));
    let workers: Vec<_> = (0..3)
        .map(|w| {
            let (q, left) = (q.clone(), left.clone());
            std::thread::spawn(move || {
                let d = Dendrite::new();
                let keep_alive = w < 2;
                let (mut lat, mut errs) = (Vec::new(), Vec::new());
                let mut client: Option<Client> = None;
                while t0.elapsed() < duration && left.fetch_sub(1, Ordering::Relaxed) > 0 {
                    let req = q.build(&d, None);
                    let t = Instant::now();
                    let c = match client.take() {
                        Some(c) => Ok(c),
                        None => Client::connect(addr, Some(source)),
                    };
                    let r = c.and_then(|mut c| {
                        let r = c.call(&req, keep_alive);
                        if r.is_ok() && keep_alive {
                            client = Some(c);
                        }
                        r
                    });
                    match check(r) {
                        Ok(_) => lat.push(t.elapsed()),
                        Err(e) => errs.push(e),
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                (lat, errs)
            })
        })
        .collect();
    let (mut lat, mut errs) = (Vec::new(), Vec::new());
    for h in workers {
        let (l, e) = h.join().unwrap();
        lat.extend(l);
        errs.extend(e);
    }
    Stats::from(&mut lat, t0.elapsed(), &errs)
}

/// 1,100 slow connections from one source, then from 35 sources (past the global cap, so
/// shedding runs), while a validator at another address queries.
#[test]
#[ignore]
fn slow_connections_do_not_starve_validators() {
    let soft = sv72::serve::conn::raise_fd_limit();
    println!(
        "\nopen-file limit of this process: {soft:?} (1,100 client + up to 1,024 server sockets \
         need ~2,300; a miner needs `ulimit -n` above serve.max_connections + 128)"
    );
    let k = keys();
    let (server, _slot) = start_with(
        &k,
        Box::new(MeanRed),
        local_options(&k, ServeConfig::default()),
    );
    let addr = server.addr();
    let q = Queries::new(k.axon.ss58());
    let m: Arc<Metrics> = server.metrics().clone();
    for (what, sources) in [
        ("1,100 slow connections from 127.0.0.2", vec![2u8]),
        (
            "1,100 slow connections from 127.0.0.10-44",
            (10u8..45).collect::<Vec<_>>(),
        ),
    ] {
        let stop = Arc::new(AtomicBool::new(false));
        let held = Arc::new(AtomicU64::new(0));
        let before = (
            m.connections.get(&["per_ip_limit"]),
            m.connections_closed.get(&["shed"]),
            m.connections_closed.get(&["header_timeout"]),
        );
        let attack = slow_attack(addr, 1100, sources, stop.clone(), held.clone());
        // Let the attack fill what it can, then query for 12 s (past two head timeouts).
        std::thread::sleep(Duration::from_secs(3));
        let open_peak = m.open_connections.load(Ordering::Relaxed);
        println!(
            "{what}: attacker holds {} client-side, server has {open_peak} open",
            held.load(Ordering::Relaxed)
        );
        let s = queries_under_attack(addr, &q, 3, Duration::from_secs(12));
        println!("{}", s.line("    validator at 127.0.0.3, 12 s"));
        stop.store(true, Ordering::Relaxed);
        let (connects, closed) = attack.join().unwrap();
        println!(
            "    attacker: {connects} connects, {closed} closed by the server; server: +{} refused per source, +{} shed, +{} head timeouts; validator: {} ok, {} errors, p99 {:.1} ms, max {:.1} ms",
            m.connections.get(&["per_ip_limit"]) - before.0,
            m.connections_closed.get(&["shed"]) - before.1,
            m.connections_closed.get(&["header_timeout"]) - before.2,
            s.ok,
            s.errors,
            s.p99_ms,
            s.max_ms
        );
        assert_eq!(s.errors, 0, "{what}: {:?}", s.first_errors);
        assert!(s.ok >= 100, "{what}: only {} answers", s.ok);
        assert!(s.p99_ms < 1000.0, "{what}: p99 {:.0} ms", s.p99_ms);
        // Let the server drop what is left before the next phase.
        std::thread::sleep(Duration::from_secs(6));
    }
    server.shutdown().unwrap();
}

// ---------- processes: decompression bombs, kill -9, the anchor ----------

/// A `sv72 serve` child answering a constant (no model to load), listening on 127.0.0.1.
struct ServeProcess {
    child: Child,
    addr: SocketAddr,
    pid: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl ServeProcess {
    fn start(dir: &Path, k: &Keys, extra: &[String]) -> Self {
        let mg = dir.join("metagraph.json");
        std::fs::write(&mg, serde_json::to_string(&neurons(k)).unwrap()).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sv72"))
            .current_dir(dir)
            .args(["serve", "--port", "0", "--constant-prediction", "0.7"])
            .args(["--hotkey", &k.axon.ss58()])
            .arg("--metagraph")
            .arg(&mg)
            .args(["--set", "serve.host=127.0.0.1"])
            .args(extra.iter().flat_map(|e| ["--set".to_string(), e.clone()]))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let keep = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                if let Some(rest) = line.strip_prefix("sv72 serve: listening on ") {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
                keep.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                panic!("sv72 serve did not start: {:#?}", lines.lock().unwrap());
            }
        };
        let pid = child.id().to_string();
        Self {
            child,
            addr,
            pid,
            lines,
        }
    }

    fn kill9(mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    fn stop(mut self) {
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let t = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            if t.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A `w`×`h` RGBA16 PNG of zeros, streamed so that the test never holds the pixels.
fn png_bomb(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Sixteen);
        enc.set_compression(png::Compression::Fast);
        let mut writer = enc.write_header().unwrap();
        let mut stream = writer.stream_writer().unwrap();
        let row = vec![0u8; w as usize * 8];
        for _ in 0..h {
            stream.write_all(&row).unwrap();
        }
        stream.finish().unwrap();
    }
    out
}

/// 16 concurrent bombs over the pixel limit, then 16 at it, while normal queries run.
#[test]
#[ignore]
fn decompression_bombs_stay_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let k = keys();
    let serve = ServeProcess::start(tmp.path(), &k, &["serve.prediction_log=p.jsonl".into()]);
    let q = Queries::new(k.axon.ss58());
    let enc = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let t = Instant::now();
    let over = enc(&png_bomb(6324, 6324));
    let at = enc(&png_bomb(4096, 4096));
    println!(
        "\nbombs: 6324x6324 RGBA16 PNG ({} KB base64, 320 MB of pixels) and 4096x4096 RGBA16 ({} KB, 134 MB) made in {:.1} s",
        over.len() / 1024,
        at.len() / 1024,
        t.elapsed().as_secs_f64()
    );
    let base_rss = rss_mib(&serve.pid).0;
    for (what, image) in [
        ("16 bombs over serve.max_image_pixels", Arc::new(over)),
        ("16 bombs at serve.max_image_pixels", Arc::new(at)),
    ] {
        let addr = serve.addr;
        let stop = Arc::new(AtomicBool::new(false));
        // Normal queries alongside: 2 workers until the bombs are answered (bounded by count).
        let normal: Vec<_> = (0..2)
            .map(|_| {
                let (q, stop) = (q.clone(), stop.clone());
                std::thread::spawn(move || {
                    let d = Dendrite::new();
                    let (mut lat, mut errs) = (Vec::new(), Vec::new());
                    let t0 = Instant::now();
                    for _ in 0..2000 {
                        if stop.load(Ordering::Relaxed) || t0.elapsed() > Duration::from_secs(60) {
                            break;
                        }
                        let req = q.build(&d, None);
                        let t = Instant::now();
                        let r =
                            Client::connect(addr, Some(3)).and_then(|mut c| c.call(&req, false));
                        match check(r) {
                            Ok(_) => lat.push(t.elapsed()),
                            Err(e) => errs.push(e),
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    (lat, errs, t0.elapsed())
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let t0 = Instant::now();
        let bombs: Vec<_> = (0..16)
            .map(|_| {
                let (q, image) = (q.clone(), image.clone());
                std::thread::spawn(move || {
                    let d = Dendrite::new();
                    let req = q.build(&d, Some(&image));
                    let t = Instant::now();
                    let r = Client::connect(addr, Some(4)).and_then(|mut c| c.call(&req, false));
                    (check(r), t.elapsed())
                })
            })
            .collect();
        let mut bomb_lat = Vec::new();
        let mut bomb_errs = Vec::new();
        let mut scored = 0;
        for b in bombs {
            let (r, d) = b.join().unwrap();
            match r {
                Ok(p) => {
                    bomb_lat.push(d);
                    if (p - 0.7).abs() < 1e-6 {
                        scored += 1;
                    }
                }
                Err(e) => bomb_errs.push(e),
            }
        }
        let bomb_wall = t0.elapsed();
        stop.store(true, Ordering::Relaxed);
        let (mut lat, mut errs) = (Vec::new(), Vec::new());
        let mut wall = Duration::ZERO;
        for h in normal {
            let (l, e, w) = h.join().unwrap();
            lat.extend(l);
            errs.extend(e);
            wall = wall.max(w);
        }
        let b = Stats::from(&mut bomb_lat, bomb_wall, &bomb_errs);
        let n = Stats::from(&mut lat, wall, &errs);
        let (hwm, rss) = rss_mib(&serve.pid);
        println!("{what}:");
        println!(
            "{}  ({scored} scored, the rest the fallback)",
            b.line("    bombs")
        );
        println!("{}", n.line("    normal queries meanwhile"));
        println!("    server peak RSS {hwm:.0} MiB (at start {base_rss:.0} MiB, now {rss:.0} MiB)");
        assert_eq!(b.errors, 0, "{what}: {:?}", b.first_errors);
        assert_eq!(n.errors, 0, "{what}: {:?}", n.first_errors);
        assert!(
            b.max_ms < 9000.0,
            "{what}: a bomb answered after {:.0} ms",
            b.max_ms
        );
        assert!(
            n.max_ms < 9000.0,
            "{what}: a query answered after {:.0} ms",
            n.max_ms
        );
        assert!(hwm < 1024.0, "{what}: peak RSS {hwm:.0} MiB");
    }
    let lines = serve.lines.lock().unwrap().clone();
    let refused = lines
        .iter()
        .filter(|l| l.contains("image_decode_failed") && l.contains("over_max_pixels"))
        .count();
    println!("    decode-failure log lines (rate-limited) naming over_max_pixels: {refused}");
    assert!(refused >= 1);
    serve.stop();
}

/// Reads the log: (whole valid lines, lines that do not parse, ends with a newline or empty).
fn log_lines(path: &Path) -> (usize, usize, bool) {
    let bytes = std::fs::read(path).unwrap_or_default();
    let whole = bytes.is_empty() || bytes.ends_with(b"\n");
    let r = sv72::serve::predlog::read_prediction_log(path, None).unwrap();
    (r.records.len(), r.bad_lines, whole)
}

/// 12 rounds of: start, signed load at c=8, `kill -9` at a random moment; every third round a
/// torn line is appended first, as a power loss would leave it. The log stays whole lines.
#[test]
#[ignore]
fn kill_9_leaves_whole_lines() {
    use rand::{Rng, SeedableRng};
    let tmp = tempfile::tempdir().unwrap();
    let k = keys();
    let q = Queries::new(k.axon.ss58());
    let log = tmp.path().join("logs/predictions.jsonl");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(72);
    let answered = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    println!("\nkill -9 mid-write, 12 rounds:");
    let mut torn_planted = 0;
    for round in 0..12 {
        if round % 3 == 2 {
            let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
            f.write_all(br#"{"time":"2026-11-2"#).unwrap();
            torn_planted += 1;
        }
        let serve = ServeProcess::start(
            tmp.path(),
            &k,
            &[format!("serve.prediction_log={}", log.display())],
        );
        let (whole_lines, bad, whole) = log_lines(&log);
        assert_eq!(
            (bad, whole),
            (0, true),
            "round {round}: not repaired at open"
        );
        let stop = Arc::new(AtomicBool::new(false));
        let load: Vec<_> = (0..8)
            .map(|_| {
                let (q, stop) = (q.clone(), stop.clone());
                let (answered, sent) = (answered.clone(), sent.clone());
                let addr = serve.addr;
                std::thread::spawn(move || {
                    let d = Dendrite::new();
                    let mut client: Option<Client> = None;
                    for _ in 0..5000 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let req = q.build(&d, None);
                        let c = match client.take() {
                            Some(c) => Ok(c),
                            None => Client::connect(addr, None),
                        };
                        let Ok(mut c) = c else { break };
                        sent.fetch_add(1, Ordering::Relaxed);
                        match c.call(&req, true) {
                            Ok(r) if r.status == 200 => {
                                answered.fetch_add(1, Ordering::Relaxed);
                                client = Some(c);
                            }
                            _ => break,
                        }
                    }
                })
            })
            .collect();
        let delay = Duration::from_millis(rng.random_range(100..900));
        std::thread::sleep(delay);
        serve.kill9();
        stop.store(true, Ordering::Relaxed);
        for h in load {
            h.join().unwrap();
        }
        let (lines, bad, whole) = log_lines(&log);
        println!(
            "    round {round:>2}: killed after {:>3} ms, {} lines (+{}), {bad} bad, ends whole: {whole}",
            delay.as_millis(),
            lines,
            lines - whole_lines
        );
        assert_eq!(bad, 0, "round {round}: a torn line after kill -9");
        assert!(whole, "round {round}: the log ends mid-line after kill -9");
    }
    // A last clean start and stop repairs nothing and loses nothing.
    let serve = ServeProcess::start(
        tmp.path(),
        &k,
        &[format!("serve.prediction_log={}", log.display())],
    );
    let mut c = Client::connect(serve.addr, None).unwrap();
    let d = Dendrite::new();
    assert!(check(c.call(&q.build(&d, None), false)).is_ok());
    serve.stop();
    let (lines, bad, whole) = log_lines(&log);
    let (answered, sent) = (
        answered.load(Ordering::Relaxed) as usize + 1,
        sent.load(Ordering::Relaxed) as usize + 1,
    );
    println!(
        "    {lines} whole lines; {sent} queries sent, {answered} answers received; {bad} bad lines; {torn_planted} planted torn lines repaired"
    );
    assert_eq!((bad, whole), (0, true));
    // A record may be written before its answer reached the client, or queued when killed.
    assert!(
        lines <= sent && lines + 12 * 64 >= answered,
        "{lines} lines"
    );
}

/// sv72 (cheap predictor) and the official Python axon side by side, alternating, medians.
#[test]
#[ignore]
fn anchor_throughput_vs_official_axon() {
    let Ok(python) = std::env::var("SV72_ANCHOR_PYTHON") else {
        println!(
            "\nanchor skipped: set SV72_ANCHOR_PYTHON to a Python with bittensor 9.12.2 \
             (python -m venv v && v/bin/pip install -r tools/requirements-anchor.txt)"
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let k = keys();
    let sv72 = ServeProcess::start(tmp.path(), &k, &["serve.prediction_log=p.jsonl".into()]);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/anchor_axon.py");
    let mut anchor = Command::new(&python)
        .arg(&script)
        .args(["--port", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = anchor.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
            if let Some(rest) = line.strip_prefix("anchor axon listening on ") {
                let _ = tx.send(rest.to_string());
            }
        }
    });
    let Ok(info) = rx.recv_timeout(Duration::from_secs(120)) else {
        let _ = anchor.kill();
        panic!("the official axon did not start");
    };
    let hotkey = info.split_whitespace().nth(2).unwrap().to_string();
    let anchor_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let anchor_pid = anchor.id().to_string();
    let q_sv72 = Queries::new(k.axon.ss58());
    let q_anchor = Queries::new(hotkey);
    println!("\nthroughput, c=8 x 300 signed queries (one signer per worker), alternating, 5 rounds each:");
    let (mut rs, mut ra, mut cs, mut ca) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Warm-up of both.
    signed_load(
        sv72.addr,
        &q_sv72,
        8,
        100,
        Signer::PerWorker,
        None,
        Duration::from_secs(60),
    );
    signed_load(
        anchor_addr,
        &q_anchor,
        8,
        100,
        Signer::PerWorker,
        None,
        Duration::from_secs(60),
    );
    for round in 0..5 {
        for (name, addr, q, pid, rate, cpu) in [
            (
                "sv72 serve",
                sv72.addr,
                &q_sv72,
                &sv72.pid,
                &mut rs,
                &mut cs,
            ),
            (
                "official axon",
                anchor_addr,
                &q_anchor,
                &anchor_pid,
                &mut ra,
                &mut ca,
            ),
        ] {
            let c0 = cpu_seconds(pid);
            let s = signed_load(
                addr,
                q,
                8,
                300,
                Signer::PerWorker,
                None,
                Duration::from_secs(120),
            );
            let cpu_ms = (cpu_seconds(pid) - c0) * 1e3 / s.ok.max(1) as f64;
            println!(
                "{}  server CPU {cpu_ms:.2} ms/query",
                s.line(&format!("  round {round} {name}"))
            );
            assert_eq!(s.errors, 0, "{name}: {:?}", s.first_errors);
            rate.push(s.req_s);
            cpu.push(cpu_ms);
        }
    }
    let (ms, ma) = (median(&mut rs), median(&mut ra));
    let (mcs, mca) = (median(&mut cs), median(&mut ca));
    println!(
        "median req/s: sv72 {ms:.0}, official axon {ma:.0}: {:.1}x; server CPU per query: {mcs:.2} vs {mca:.2} ms ({:.1}x less)",
        ms / ma,
        mca / mcs
    );
    // One shared dendrite (one uuid) at c=8, as a validator process sends: the official axon
    // refuses the sends that arrive out of order (issue #12), sv72 does not.
    println!("one shared dendrite-style signer, c=8 x 200:");
    let mut shared = Vec::new();
    for (name, addr, q) in [
        ("sv72 serve", sv72.addr, &q_sv72),
        ("official axon", anchor_addr, &q_anchor),
    ] {
        let signer = Signer::Shared(Dendrite::new());
        let s = signed_load(addr, q, 8, 200, signer, None, Duration::from_secs(120));
        println!("{}", s.line(&format!("  {name}")));
        shared.push(s);
    }
    let _ = anchor.kill();
    let _ = anchor.wait();
    sv72.stop();
    assert_eq!(shared[0].errors, 0, "{:?}", shared[0].first_errors);
    assert!(ms / ma >= 4.0, "throughput ratio {:.2} < 4", ms / ma);
}

// ---------- a real-size backbone ----------

/// Issue #11's serve goal, measured: single sequential signed queries (224² JPEG, keep-alive)
/// against a head checkpoint on a random ViT-S/14 + 4 registers snapshot (real size: 22M
/// parameters, 261 tokens) on the CPU. Prints p50/p99 against the goal (p99 < 150 ms); asserts
/// only that every query was answered (a benchmark, not a timed test).
#[test]
#[ignore]
fn vit_s_checkpoint_single_request_latency() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let snap = d.join("vits14-reg");
    sv72::bench::write_random_snapshot("vits14-reg", &snap).unwrap();
    crate::common::demo_mix(d, 8);
    let bb = format!("backbone.model={}", snap.display());
    let out = crate::common::sv72(
        d,
        &[
            "--set",
            &bb,
            "train-head",
            "--manifest",
            "mix",
            "--epochs",
            "2",
            "--views",
            "1",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cache = format!("paths.feature_cache={}", d.join("features").display());
    let cfg = sv72::config::Config::load(None, &[bb.clone(), cache]).unwrap();
    let loader = sv72::infer::model_loader(&cfg, sv72::config::Device::Cpu).unwrap();
    let model = loader(&d.join("checkpoints/latest")).unwrap();
    let k = keys();
    let (server, _slot) = start_with(&k, model, local_options(&k, ServeConfig::default()));
    let q = Queries::new(k.axon.ss58());
    // Warm-up (first-touch allocations, rayon pool start).
    let warm = signed_load(
        server.addr(),
        &q,
        1,
        5,
        Signer::PerWorker,
        None,
        Duration::from_secs(60),
    );
    assert_eq!(warm.errors, 0, "{:?}", warm.first_errors);
    let c0 = cpu_seconds(&self_pid());
    let s = signed_load(
        server.addr(),
        &q,
        1,
        100,
        Signer::PerWorker,
        None,
        Duration::from_secs(120),
    );
    let cpu = cpu_seconds(&self_pid()) - c0;
    println!(
        "\n{}  (process CPU {cpu:.1} s; {} threads; goal p99 < 150 ms)",
        s.line("ViT-S/14-reg checkpoint, c=1 x 100"),
        rayon::current_num_threads()
    );
    assert_eq!(s.errors, 0, "{:?}", s.first_errors);
    assert_eq!(s.sent, 100, "not every query was sent within 120 s");
    server.shutdown().unwrap();
}
