//! The HTTP/1.1 axon: routing, the Python axon's order of checks, limits, prediction log and
//! graceful shutdown.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Map, Value};

use super::blacklist::Blacklist;
use super::metrics::{log_event, Metrics};
use super::protocol::{
    messages, now_ns, signature_message, NonceError, NonceTracker, RequestHeaders, AXON_VERSION,
    EMPTY_BODY_HASH, SYNAPSE_NAME,
};
use super::telemetry::{Batcher, ModelSlot};
use crate::chain::MetagraphHandle;
use crate::config::ServeConfig;
use crate::infer::{BatchOptions, Outcome};
use crate::keys::{ss58_decode, verify_sr25519, SignatureError};

/// Everything the server needs to know; `from_config` fills it from `serve:` in the config.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub addr: SocketAddr,
    /// Our own hotkey (SS58): the axon hotkey in every signed message.
    pub axon_hotkey: String,
    pub min_stake: f64,
    pub max_batch: usize,
    pub max_wait: Duration,
    /// Images waiting for inference at most; beyond it the lowest stake is shed (503).
    pub queue_capacity: usize,
    pub max_body_bytes: usize,
    /// Largest decoded image file accepted.
    pub max_image_bytes: usize,
    pub max_image_pixels: u64,
    pub fallback_prediction: f32,
    /// JSON-lines prediction log; low-confidence images go to `low_confidence/` beside it.
    pub prediction_log: Option<PathBuf>,
    /// Disk cap of the low-confidence image folder.
    pub low_confidence_cap_bytes: u64,
    /// Time allowed for a request head, which is also the keep-alive idle limit (kept above
    /// aiohttp's 15 s pool idle time to avoid the reuse race).
    pub header_read_timeout: Duration,
    /// Time allowed to receive the body once the checks passed.
    pub body_read_timeout: Duration,
    /// Size cap of the request head (hyper's read buffer; 8 KiB at least).
    pub max_header_bytes: usize,
    pub max_connections: usize,
    /// Wait for a prediction at most this long, then answer the fallback (validators stop
    /// listening after 9 s).
    pub inference_timeout: Duration,
    /// Send the image back in the response body as the Python axon does (doubles traffic).
    pub echo_image: bool,
    /// In-flight requests get this long to finish at shutdown.
    pub shutdown_grace: Duration,
    /// How often the metagraph file is checked for changes.
    pub metagraph_poll: Duration,
    /// Shut down on SIGINT/SIGTERM.
    pub handle_signals: bool,
    /// The VLM judge asked about answers in its band (`judge:` in the config), within what is
    /// left of `inference_timeout`.
    pub judge: Option<Arc<crate::judge::Judge>>,
}

impl ServeOptions {
    /// Options from the `serve:` config section, with defaults for what it does not set.
    pub fn from_config(c: &ServeConfig, axon_hotkey: String) -> Result<Self> {
        ss58_decode(&axon_hotkey)
            .with_context(|| format!("our hotkey {axon_hotkey:?} is not a valid SS58 address"))?;
        if c.max_batch == 0 {
            bail!("serve.max_batch must be at least 1");
        }
        if !(0.0..=1.0).contains(&c.fallback_prediction) {
            bail!(
                "serve.fallback_prediction = {} must be within [0, 1]",
                c.fallback_prediction
            );
        }
        if c.max_body_bytes < 1024 {
            bail!(
                "serve.max_body_bytes = {} is too small (at least 1024)",
                c.max_body_bytes
            );
        }
        let ip: std::net::IpAddr = c
            .host
            .parse()
            .with_context(|| format!("serve.host = {:?} is not an IP address", c.host))?;
        Ok(Self {
            addr: SocketAddr::new(ip, c.port),
            axon_hotkey,
            min_stake: c.min_stake,
            max_batch: c.max_batch,
            max_wait: Duration::from_millis(c.max_wait_ms),
            queue_capacity: (c.max_batch * 16).max(64),
            max_body_bytes: c.max_body_bytes,
            max_image_bytes: c.max_body_bytes,
            max_image_pixels: c.max_image_pixels,
            fallback_prediction: c.fallback_prediction as f32,
            prediction_log: Some(c.prediction_log.clone()),
            low_confidence_cap_bytes: 512 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(20),
            body_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_connections: 1024,
            inference_timeout: Duration::from_millis(8500),
            echo_image: false,
            shutdown_grace: Duration::from_secs(10),
            metagraph_poll: Duration::from_secs(5),
            handle_signals: false,
            judge: None,
        })
    }
}

struct State {
    opts: ServeOptions,
    metagraph: Arc<MetagraphHandle>,
    nonces: NonceTracker,
    batcher: Arc<Batcher>,
    slot: Arc<ModelSlot>,
    metrics: Arc<Metrics>,
    plog: Option<PredictionLog>,
}

/// A running axon.
pub struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
    metrics: Arc<Metrics>,
}

impl Server {
    /// Binds `opts.addr` and serves on a runtime of its own; returns once listening.
    pub fn start(
        opts: ServeOptions,
        metagraph: Arc<MetagraphHandle>,
        slot: Arc<ModelSlot>,
    ) -> Result<Self> {
        let listener = std::net::TcpListener::bind(opts.addr)
            .with_context(|| format!("cannot listen on {} (serve.host/serve.port)", opts.addr))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let plog = match &opts.prediction_log {
            Some(p) => Some(PredictionLog::open(p, opts.low_confidence_cap_bytes)?),
            None => None,
        };
        let metrics = slot.telemetry();
        let threads = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(2, 8);
        let thread = std::thread::Builder::new()
            .name("sv72-axon".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .enable_all()
                    .thread_name("sv72-axon-io")
                    .build()
                    .context("cannot start the tokio runtime")?;
                rt.block_on(serve_loop(listener, opts, metagraph, slot, plog, stop_rx))
            })
            .context("cannot spawn the server thread")?;
        Ok(Self {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
            metrics,
        })
    }

    /// The address actually bound (port 0 gets a free port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Stops accepting, lets in-flight requests finish (up to the grace time), then returns.
    pub fn shutdown(mut self) -> Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        self.join()
    }

    /// Blocks until the server stops (a signal when `handle_signals` is set).
    pub fn wait(mut self) -> Result<()> {
        self.join()
    }

    fn join(&mut self) -> Result<()> {
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("the server thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        let _ = self.join();
    }
}

async fn serve_loop(
    listener: std::net::TcpListener,
    opts: ServeOptions,
    metagraph: Arc<MetagraphHandle>,
    slot: Arc<ModelSlot>,
    plog: Option<PredictionLog>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let metrics = slot.telemetry();
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let (batcher, inference) = Batcher::start(
        slot.clone(),
        BatchOptions {
            max_batch: opts.max_batch,
            max_wait: opts.max_wait,
            queue_capacity: opts.queue_capacity,
            fallback: opts.fallback_prediction,
        },
        metrics.clone(),
    );
    let state = Arc::new(State {
        nonces: NonceTracker::new(100_000),
        opts: opts.clone(),
        metagraph: metagraph.clone(),
        batcher: batcher.clone(),
        slot,
        metrics: metrics.clone(),
        plog,
    });
    log_event(
        "info",
        "serve_started",
        json!({"addr": listener.local_addr()?.to_string(), "hotkey": opts.axon_hotkey,
               "model": state.slot.version()}),
    );

    // Metagraph file watcher.
    let mg_stop = stop.clone();
    let poll = opts.metagraph_poll;
    let mg = metagraph.clone();
    tokio::spawn(async move {
        let mut mg_stop = mg_stop;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = mg_stop.changed() => return,
            }
            let mg = mg.clone();
            match tokio::task::spawn_blocking(move || {
                let r = mg.reload_if_changed();
                (r, mg.get().len())
            })
            .await
            {
                Ok((Ok(true), n)) => log_event("info", "metagraph_reloaded", json!({"neurons": n})),
                Ok((Err(e), _)) => log_event(
                    "error",
                    "metagraph_reload_failed",
                    json!({"error": format!("{e:#}"), "note": "previous snapshot stays in force"}),
                ),
                _ => {}
            }
        }
    });

    let mut signal_stop = stop.clone();
    if opts.handle_signals {
        let (tx, rx) = tokio::sync::watch::channel(false);
        signal_stop = rx;
        let mut outer = stop.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) else {
                    log_event("error", "signal_handler_failed", json!({}));
                    return;
                };
                tokio::select! {
                    _ = term.recv() => log_event("info", "signal", json!({"signal": "SIGTERM"})),
                    _ = int.recv() => log_event("info", "signal", json!({"signal": "SIGINT"})),
                    _ = outer.changed() => {}
                }
            }
            #[cfg(not(unix))]
            {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = outer.changed() => {}
                }
            }
            let _ = tx.send(true);
        });
    }

    let conn_limit = Arc::new(tokio::sync::Semaphore::new(opts.max_connections.max(1)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .max_buf_size(opts.max_header_bytes.max(8192))
        .keep_alive(true);
    let (conn_stop_tx, conn_stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            _ = signal_stop.changed() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                log_event("error", "accept_failed", json!({"error": e.to_string()}));
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(permit) = conn_limit.clone().try_acquire_owned() else {
            metrics.reject("too_many_connections");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let http = http.clone();
        let mut conn_stop = conn_stop_rx.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(state, peer, req).await) }
            });
            let conn = http.serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = conn_stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    log_event(
        "info",
        "serve_stopping",
        json!({"open_connections": tasks.len()}),
    );
    let _ = conn_stop_tx.send(true);
    let drained = tokio::time::timeout(opts.shutdown_grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        log_event(
            "warn",
            "shutdown_grace_expired",
            json!({"aborted": tasks.len()}),
        );
        tasks.abort_all();
    }
    batcher.close();
    let _ = tokio::task::spawn_blocking(move || inference.join()).await;
    if let Some(p) = Arc::try_unwrap(state).ok().and_then(|s| s.plog) {
        p.close();
    }
    log_event("info", "serve_stopped", json!({}));
    Ok(())
}

type Resp = Response<Full<Bytes>>;

struct InFlight(Arc<Metrics>);
impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn handle(state: Arc<State>, peer: SocketAddr, req: Request<Incoming>) -> Resp {
    state.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let _guard = InFlight(state.metrics.clone());
    let started = Instant::now();
    let path = req.uri().path().to_string();
    let resp = match path.as_str() {
        "/healthz" | "/metrics" if req.method() != Method::GET => plain_json(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"detail": "Method Not Allowed"}),
        ),
        "/healthz" => plain_json(
            StatusCode::OK,
            json!({"status": "ok", "model": state.slot.version(),
                   "validators": state.metagraph.get().len()}),
        ),
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(state.metrics.render())));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        _ => synapse_route(&state, peer, req, &path, started).await,
    };
    state.metrics.request(resp.status().as_u16());
    resp
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Image,
    Ping,
}

async fn synapse_route(
    state: &State,
    peer: SocketAddr,
    req: Request<Incoming>,
    path: &str,
    started: Instant,
) -> Resp {
    let mut segs = path.trim_start_matches('/').split('/');
    let first = segs.next().unwrap_or("");
    let extra = segs.next().is_some();
    let kind = match first {
        SYNAPSE_NAME => Kind::Image,
        "Synapse" => Kind::Ping,
        other => {
            state.metrics.reject("unknown_synapse");
            let h = RequestHeaders::parse(req.headers()).unwrap_or_default();
            let msg = messages::unknown_synapse(other);
            return error_response(state, &h, peer, StatusCode::NOT_FOUND, &msg, started);
        }
    };
    if extra {
        state.metrics.reject("not_found");
        return plain_json(StatusCode::NOT_FOUND, json!({"detail": "Not Found"}));
    }
    if req.method() != Method::POST && req.method() != Method::GET {
        state.metrics.reject("method_not_allowed");
        return plain_json(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"detail": "Method Not Allowed"}),
        );
    }
    match pipeline(state, peer, req, kind, started).await {
        Ok(r) => r,
        Err((h, reason, status, msg)) => {
            state.metrics.reject(reason);
            if status == StatusCode::INTERNAL_SERVER_ERROR
                || status == StatusCode::SERVICE_UNAVAILABLE
            {
                log_event(
                    "warn",
                    "request_failed",
                    json!({"reason": reason, "status": status.as_u16(), "message": msg,
                           "peer": peer.to_string(), "hotkey": h.dendrite_hotkey}),
                );
            }
            error_response(state, &h, peer, status, &msg, started)
        }
    }
}

type Reject = (RequestHeaders, &'static str, StatusCode, String);

fn reject(h: &RequestHeaders, reason: &'static str, status: StatusCode, msg: String) -> Reject {
    (h.clone(), reason, status, msg)
}

/// The Python axon's steps in its order: headers, blacklist, verify (nonce, signature, record),
/// body (size, JSON, types, hash), forward.
async fn pipeline(
    state: &State,
    peer: SocketAddr,
    req: Request<Incoming>,
    kind: Kind,
    started: Instant,
) -> Result<Resp, Reject> {
    let h = match RequestHeaders::parse(req.headers()) {
        Ok(h) => h,
        Err(e) => {
            log_event(
                "warn",
                "bad_headers",
                json!({"error": e.0, "peer": peer.to_string()}),
            );
            let h = RequestHeaders::default();
            return Err(reject(
                &h,
                "bad_headers",
                StatusCode::INTERNAL_SERVER_ERROR,
                messages::internal_error(),
            ));
        }
    };

    // Blacklist before anything costly; the ping route has none, as in bittensor.
    let stake = if kind == Kind::Image {
        match state
            .metagraph
            .get()
            .admit(h.dendrite_hotkey.as_deref(), state.opts.min_stake)
        {
            Ok(s) => s,
            Err(r) => {
                return Err(reject(
                    &h,
                    r.metric_label(),
                    StatusCode::FORBIDDEN,
                    messages::blacklisted(r.reason()),
                ))
            }
        }
    } else {
        0.0
    };

    verify(state, &h).map_err(|(reason, detail)| {
        reject(
            &h,
            reason,
            StatusCode::UNAUTHORIZED,
            messages::not_verified(&detail),
        )
    })?;

    // Body, only for callers that passed the checks.
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let max = state.opts.max_body_bytes;
    let too_large = |n: String| {
        reject(
            &h,
            "body_too_large",
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Payload Too Large: body of {n} bytes exceeds the limit of {max} bytes"),
        )
    };
    if let Some(n) = declared {
        if n > max as u64 {
            return Err(too_large(n.to_string()));
        }
    }
    let body = Limited::new(req.into_body(), max);
    let bytes = match tokio::time::timeout(state.opts.body_read_timeout, body.collect()).await {
        Err(_) => {
            return Err(reject(
                &h,
                "body_timeout",
                StatusCode::REQUEST_TIMEOUT,
                "Request Timeout: body not received in time".into(),
            ))
        }
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Err(too_large(format!("more than {max}")));
            }
            return Err(reject(
                &h,
                "body_read_error",
                StatusCode::BAD_REQUEST,
                format!("Bad Request: {e}"),
            ));
        }
        Ok(Ok(c)) => c.to_bytes(),
    };

    let value: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            state.metrics.reject("bad_json");
            return Ok(fastapi_422(&e.to_string()));
        }
    };
    let Value::Object(mut body) = value else {
        state.metrics.reject("bad_json");
        return Ok(fastapi_422("Input should be a valid dictionary"));
    };
    if let Err(field) = check_body_types(&body) {
        log_event(
            "warn",
            "bad_body_field",
            json!({"field": field, "hotkey": h.dendrite_hotkey, "peer": peer.to_string()}),
        );
        return Err(reject(
            &h,
            "bad_body",
            StatusCode::INTERNAL_SERVER_ERROR,
            messages::internal_error(),
        ));
    }
    if h.computed_body_hash.as_deref() != Some(EMPTY_BODY_HASH) {
        return Err(reject(
            &h,
            "body_hash_mismatch",
            StatusCode::INTERNAL_SERVER_ERROR,
            messages::internal_error(),
        ));
    }

    let forward_start = Instant::now();
    if kind == Kind::Image {
        let image_b64 = match body.get_mut("image") {
            Some(Value::String(s)) => std::mem::take(s),
            _ => String::new(),
        };
        let (prediction, image_hash, scored, raw) = forward(state, &h, image_b64, stake).await?;
        body.insert("prediction".into(), py_float(prediction));
        if state.opts.echo_image {
            if let Some(raw) = &raw {
                body.insert("image".into(), Value::String(raw.1.clone()));
            }
        } else {
            body.remove("image");
        }
        let latency = started.elapsed().as_secs_f64();
        state.metrics.latency_seconds.observe(latency);
        state.metrics.prediction.observe(prediction as f64);
        if let Some(log) = &state.plog {
            log.record(PredictionRecord {
                time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                validator: h.dendrite_hotkey.clone().unwrap_or_default(),
                image_hash,
                prediction,
                scored,
                latency_ms: latency * 1000.0,
                model: state.slot.version(),
                image: raw
                    .filter(|_| (0.4..=0.6).contains(&prediction))
                    .map(|r| r.0),
            });
        }
    }
    let process_time = forward_start.elapsed().as_secs_f64();
    Ok(success_response(state, &h, body, process_time))
}

/// Signature and nonce verification, returning (metric reason, detail text) on failure.
fn verify(state: &State, h: &RequestHeaders) -> Result<(), (&'static str, String)> {
    let hotkey = h
        .dendrite_hotkey
        .as_deref()
        .ok_or(("missing_hotkey", "Missing dendrite hotkey".to_string()))?;
    if let Err(e) = ss58_decode(hotkey) {
        return Err((
            "bad_hotkey",
            SignatureError::BadHotkey(e.to_string()).to_string(),
        ));
    }
    let key = NonceTracker::key(hotkey, h.dendrite_uuid.as_deref());
    let now = now_ns();
    let nonce_reason = |e: &NonceError| match e {
        NonceError::Missing => "missing_nonce",
        NonceError::TooOld { .. } => "stale_nonce",
        NonceError::NotNewer => "replayed_nonce",
    };
    state
        .nonces
        .check(&key, h, now)
        .map_err(|e| (nonce_reason(&e), e.to_string()))?;
    let nonce = h.dendrite_nonce.unwrap_or_default();
    // The Python axon (>= 9.3) skips verification of an unsigned request; no real dendrite
    // sends one, so it is refused here.
    let sig = match h.dendrite_signature.as_deref() {
        Some(s) if !s.is_empty() => s,
        _ => return Err(("missing_signature", "Missing Signature".into())),
    };
    let message = signature_message(
        nonce,
        hotkey,
        &state.opts.axon_hotkey,
        h.dendrite_uuid.as_deref(),
        h.computed_body_hash.as_deref(),
    );
    match verify_sr25519(hotkey, message.as_bytes(), sig) {
        Ok(()) => {}
        Err(SignatureError::Mismatch) => {
            return Err((
                "bad_signature",
                format!("Signature mismatch with {message} and {sig}"),
            ))
        }
        Err(e) => return Err(("bad_signature", e.to_string())),
    }
    state
        .nonces
        .check_and_record(&key, h, now)
        .map_err(|e| (nonce_reason(&e), e.to_string()))
}

/// Types the body fields must have for pydantic to build an `ImageSynapse` (else 500).
fn check_body_types(b: &Map<String, Value>) -> Result<(), &'static str> {
    const FIELDS: [&str; 9] = [
        "name",
        "image",
        "prediction",
        "timeout",
        "testnet_label",
        "total_size",
        "header_size",
        "dendrite",
        "axon",
    ];
    let is_int = |v: &Value| v.is_i64() || v.is_u64();
    for field in FIELDS {
        let Some(v) = b.get(field) else { continue };
        let ok = match field {
            "name" | "image" => v.is_string(),
            "prediction" => v.is_number(),
            "timeout" => v.is_number() || v.is_null(),
            "testnet_label" => is_int(v),
            "total_size" | "header_size" => is_int(v) || v.is_null(),
            _ => v.is_object() || v.is_null(),
        };
        if !ok {
            return Err(field);
        }
    }
    Ok(())
}

/// A decoded-image job's result: (prediction, image hash, scored by the model?, (bytes, b64)).
type Forwarded = (f32, String, bool, Option<(Vec<u8>, String)>);

async fn forward(
    state: &State,
    h: &RequestHeaders,
    image_b64: String,
    stake: f64,
) -> Result<Forwarded, Reject> {
    let started = Instant::now();
    let fallback = state.opts.fallback_prediction;
    let max_bytes = state.opts.max_image_bytes;
    let max_pixels = state.opts.max_image_pixels;
    let decoded = tokio::task::spawn_blocking(move || {
        let r = decode_image(&image_b64, max_bytes, max_pixels);
        (r, image_b64)
    })
    .await;
    let (decoded, b64) = match decoded {
        Ok(x) => x,
        Err(e) => (
            Err(("decode_panicked", e.to_string(), String::new())),
            String::new(),
        ),
    };
    let (img, bytes, hash) = match decoded {
        Ok(x) => x,
        Err((what, err, hash)) => {
            state
                .metrics
                .decode_failures
                .fetch_add(1, Ordering::Relaxed);
            log_event(
                "error",
                "image_decode_failed",
                json!({"reason": what, "error": err, "hotkey": h.dendrite_hotkey,
                       "image_hash": hash, "prediction": fallback}),
            );
            return Ok((fallback, hash, false, None));
        }
    };
    let rx = state.batcher.submit(img, stake);
    match tokio::time::timeout(state.opts.inference_timeout, rx).await {
        Ok(Ok(Outcome::Scored(p))) => {
            let deadline = started + state.opts.inference_timeout;
            let p = match &state.opts.judge {
                Some(j) if j.wants(p) => judged(j, &bytes, &hash, p, deadline).await,
                _ => p,
            };
            Ok((p, hash, true, Some((bytes, b64))))
        }
        Ok(Ok(Outcome::Fallback(p))) => Ok((p, hash, false, Some((bytes, b64)))),
        Ok(Ok(Outcome::Shed)) => Err(reject(
            h,
            "shed",
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable: the miner is saturated and served higher-stake requests first"
                .into(),
        )),
        Ok(Err(_)) | Err(_) => {
            log_event(
                "error",
                "inference_timeout",
                json!({"hotkey": h.dendrite_hotkey, "image_hash": hash, "prediction": fallback}),
            );
            Ok((fallback, hash, false, Some((bytes, b64))))
        }
    }
}

/// The judge's answer for a scored image, or `base` when it is not back by `deadline` (the
/// judge keeps its own deadline; the timeout here only guards against a stuck blocking pool).
async fn judged(
    j: &Arc<crate::judge::Judge>,
    bytes: &[u8],
    hash: &str,
    base: f32,
    deadline: Instant,
) -> f32 {
    let (j, bytes, hash) = (j.clone(), bytes.to_vec(), hash.to_string());
    let task = tokio::task::spawn_blocking(move || j.judge(&bytes, &hash, base, deadline).answer);
    let left = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left, task).await {
        Ok(Ok(p)) => p,
        _ => base,
    }
}

type Decoded = (image::RgbImage, Vec<u8>, String);

/// base64 → bytes → checked dimensions → RGB image. Errors carry (reason, detail, hash).
fn decode_image(
    b64: &str,
    max_bytes: usize,
    max_pixels: u64,
) -> Result<Decoded, (&'static str, String, String)> {
    let text_hash = || crate::util::hash::content_hash(b64.as_bytes());
    if b64.len() / 4 * 3 > max_bytes + 3 {
        return Err((
            "image_too_large",
            format!("{} base64 characters", b64.len()),
            text_hash(),
        ));
    }
    let engine = base64::engine::general_purpose::STANDARD;
    let bytes = match engine.decode(b64) {
        Ok(b) => b,
        // Python's b64decode drops characters outside the alphabet (line breaks and the like).
        Err(_) => {
            let cleaned: String = b64
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
                .collect();
            engine
                .decode(cleaned)
                .map_err(|e| ("bad_base64", e.to_string(), text_hash()))?
        }
    };
    let hash = crate::util::hash::content_hash(&bytes);
    if bytes.is_empty() {
        return Err(("empty_image", "the image field is empty".into(), hash));
    }
    let reader = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| ("not_an_image", e.to_string(), hash.clone()))?;
    if reader.format().is_none() {
        return Err(("not_an_image", "unknown image format".into(), hash));
    }
    let (w, hgt) = reader
        .into_dimensions()
        .map_err(|e| ("not_an_image", e.to_string(), hash.clone()))?;
    if (w as u64) * (hgt as u64) > max_pixels {
        return Err((
            "too_many_pixels",
            format!("{w}x{hgt} exceeds serve.max_image_pixels = {max_pixels}"),
            hash,
        ));
    }
    let mut reader = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| ("not_an_image", e.to_string(), hash.clone()))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(hgt);
    limits.max_alloc = Some(max_pixels.saturating_mul(8).max(64 << 20));
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| ("decode_error", e.to_string(), hash.clone()))?;
    Ok((img.to_rgb8(), bytes, hash))
}

/// A float as the shortest text that round-trips through f32 (0.73, not 0.7300000190734863).
fn py_float(p: f32) -> Value {
    let v: f64 = format!("{p}").parse().unwrap_or(p as f64);
    serde_json::Number::from_f64(v).map_or(Value::from(0.5), Value::Number)
}

fn plain_json(status: StatusCode, body: Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// FastAPI's 422 for a body that is not a JSON object.
fn fastapi_422(err: &str) -> Resp {
    plain_json(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({"detail": [{"type": "json_invalid", "loc": ["body", 0],
                           "msg": "JSON decode error", "input": {}, "ctx": {"error": err}}]}),
    )
}

fn put(h: &mut HeaderMap, name: &str, value: &str) {
    let clean: String = value
        .chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect();
    if let (Ok(n), Ok(v)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(&clean),
    ) {
        h.insert(n, v);
    }
}

fn common_headers(out: &mut HeaderMap, h: &RequestHeaders, status: u16, message: &str, secs: f64) {
    put(out, "name", h.echoed("name").unwrap_or(SYNAPSE_NAME));
    if let Some(t) = h.echoed("timeout") {
        put(out, "timeout", t);
    }
    put(out, "bt_header_axon_status_code", &status.to_string());
    put(out, "bt_header_axon_status_message", message);
    put(out, "bt_header_axon_process_time", &secs.to_string());
    for k in [
        "bt_header_axon_ip",
        "bt_header_axon_port",
        "bt_header_axon_hotkey",
    ] {
        if let Some(v) = h.echoed(k) {
            put(out, k, v);
        }
    }
    for k in ["header_size", "total_size", "computed_body_hash"] {
        if let Some(v) = h.echoed(k) {
            put(out, k, v);
        }
    }
}

fn error_response(
    state: &State,
    h: &RequestHeaders,
    peer: SocketAddr,
    status: StatusCode,
    message: &str,
    started: Instant,
) -> Resp {
    let mut r = plain_json(status, json!({"message": message}));
    let out = r.headers_mut();
    common_headers(
        out,
        h,
        status.as_u16(),
        message,
        started.elapsed().as_secs_f64(),
    );
    put(out, "bt_header_axon_version", &AXON_VERSION.to_string());
    if h.echoed("bt_header_axon_hotkey").is_none() {
        put(out, "bt_header_axon_hotkey", &state.opts.axon_hotkey);
    }
    for (k, v) in &h.echo {
        if k.starts_with("bt_header_dendrite_")
            && k != "bt_header_dendrite_ip"
            && k != "bt_header_dendrite_port"
        {
            put(out, k, v);
        }
    }
    put(out, "bt_header_dendrite_ip", &peer.ip().to_string());
    put(out, "bt_header_dendrite_port", &peer.port().to_string());
    r
}

fn success_response(
    state: &State,
    h: &RequestHeaders,
    mut body: Map<String, Value>,
    process_time: f64,
) -> Resp {
    let mut axon = match body.remove("axon") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    axon.insert("status_code".into(), json!(200));
    axon.insert("status_message".into(), json!("Success"));
    axon.insert("process_time".into(), json!(process_time));
    body.insert("axon".into(), Value::Object(axon));
    body.entry("name").or_insert_with(|| json!(SYNAPSE_NAME));
    let dendrite = body.get("dendrite").and_then(|d| d.as_object()).cloned();
    let mut r = plain_json(StatusCode::OK, Value::Object(body));
    let out = r.headers_mut();
    common_headers(out, h, 200, "Success", process_time);
    if h.echoed("bt_header_axon_hotkey").is_none() {
        put(out, "bt_header_axon_hotkey", &state.opts.axon_hotkey);
    }
    match dendrite {
        // The Python axon echoes the body's copy of the dendrite terminal.
        Some(d) => {
            for (k, v) in d {
                let text = match v {
                    Value::Null => continue,
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                put(out, &format!("bt_header_dendrite_{k}"), &text);
            }
        }
        None => {
            for (k, v) in &h.echo {
                if k.starts_with("bt_header_dendrite_") {
                    put(out, k, v);
                }
            }
        }
    }
    r
}

/// One line of the prediction log.
struct PredictionRecord {
    time: String,
    validator: String,
    image_hash: String,
    prediction: f32,
    scored: bool,
    latency_ms: f64,
    model: String,
    /// Image bytes to keep (low-confidence answers only).
    image: Option<Vec<u8>>,
}

/// Appends prediction records from a writer thread so disk I/O never delays an answer.
struct PredictionLog {
    tx: Option<std::sync::mpsc::SyncSender<PredictionRecord>>,
    thread: Option<std::thread::JoinHandle<()>>,
    dropped: Arc<AtomicU64>,
}

impl PredictionLog {
    fn open(path: &Path, cap_bytes: u64) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| {
                format!(
                    "cannot create the prediction log folder {} (serve.prediction_log)",
                    dir.display()
                )
            })?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| {
                format!(
                    "cannot open prediction log {} (serve.prediction_log)",
                    path.display()
                )
            })?;
        let low_dir = path
            .parent()
            .map(|p| p.join("low_confidence"))
            .unwrap_or_else(|| PathBuf::from("low_confidence"));
        let mut used: u64 = std::fs::read_dir(&low_dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        let (tx, rx) = std::sync::mpsc::sync_channel::<PredictionRecord>(4096);
        let full_logged = AtomicBool::new(false);
        let thread = std::thread::Builder::new()
            .name("sv72-prediction-log".into())
            .spawn(move || {
                for r in rx {
                    let mut saved = None;
                    if let Some(img) = &r.image {
                        let dest = low_dir.join(format!("{}.img", r.image_hash));
                        if used + img.len() as u64 > cap_bytes {
                            if !full_logged.swap(true, Ordering::Relaxed) {
                                log_event("warn", "low_confidence_store_full",
                                    json!({"dir": low_dir.display().to_string(), "cap_bytes": cap_bytes}));
                            }
                        } else if dest.exists() {
                            saved = Some(dest.display().to_string());
                        } else if crate::util::fsx::write_atomic(&dest, img).is_ok() {
                            used += img.len() as u64;
                            saved = Some(dest.display().to_string());
                        }
                    }
                    let line = json!({
                        "time": r.time, "validator": r.validator, "image_hash": r.image_hash,
                        "prediction": py_float(r.prediction), "scored": r.scored,
                        "latency_ms": (r.latency_ms * 1000.0).round() / 1000.0,
                        "model": r.model, "saved_image": saved,
                    });
                    if writeln!(file, "{line}").is_err() {
                        log_event("error", "prediction_log_write_failed", json!({}));
                    }
                }
                let _ = file.flush();
            })
            .context("cannot spawn the prediction log thread")?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    fn record(&self, r: PredictionRecord) {
        if let Some(tx) = &self.tx {
            if tx.try_send(r).is_err() && self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                log_event(
                    "warn",
                    "prediction_log_behind",
                    json!({"note": "records dropped"}),
                );
            }
        }
    }

    fn close(mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PredictionLog {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
