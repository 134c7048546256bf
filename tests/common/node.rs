//! A stand-in subtensor (or any JSON-over-HTTP) server on 127.0.0.1 for the chain tests: one
//! thread, bounded in time, answering each request through a handler and logging it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub fn hex0x(b: &[u8]) -> String {
    let mut s = String::from("0x");
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

pub const BLOCK_HASH: &str = "0xabababababababababababababababababababababababababababababababab";

pub enum Reply {
    Result(Value),
    Error(i64, &'static str),
    Http(u16, &'static str),
    /// Any status and body (not wrapped in JSON-RPC).
    Body(u16, String),
}

pub type Handler = dyn Fn(&str, &Value) -> Reply + Send + Sync;

pub struct Node {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Node {
    pub fn start(handler: Arc<Handler>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (req2, stop2) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            // Bounded: never outlives a stuck test by more than a minute.
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = handle(s, &*handler, &req2);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    pub fn ws(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    pub fn methods(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| r["method"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn handle(mut s: TcpStream, handler: &Handler, log: &Mutex<Vec<Value>>) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < header_end + len {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let req: Value = serde_json::from_slice(&buf[header_end..]).unwrap_or(Value::Null);
    // A request without a JSON-RPC body (e.g. a price GET) is handed over by its request line.
    let line = head.lines().next().unwrap_or("").to_string();
    let line = line
        .rsplit_once(' ')
        .map_or(line.as_str(), |(l, _)| l)
        .to_string();
    let req = if req.is_null() {
        json!({"method": line})
    } else {
        req
    };
    log.lock().unwrap().push(req.clone());
    let method = req["method"].as_str().unwrap_or("");
    let (status, body) = match handler(method, &req["params"]) {
        Reply::Result(v) => (
            200,
            json!({"jsonrpc": "2.0", "id": req["id"], "result": v}).to_string(),
        ),
        Reply::Error(code, msg) => (
            200,
            json!({"jsonrpc": "2.0", "id": req["id"], "error": {"code": code, "message": msg}})
                .to_string(),
        ),
        Reply::Http(status, body) => (status, body.to_string()),
        Reply::Body(status, body) => (status, body),
    };
    write!(
        s,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    s.flush()
}
