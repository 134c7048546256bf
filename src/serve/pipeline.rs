//! One request through the Python axon's steps in its order: route, headers, blacklist, verify
//! (nonce, signature, record), body (size, JSON, types, hash), forward (decode, inference), each
//! bounded by the query's answer deadline.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use serde_json::{json, Map, Value};

use super::blacklist::Blacklist;
use super::conn::Conn;
use super::image::{ImageLanes, Lane};
use super::metrics::Metrics;
use super::options::ServeOptions;
use super::predlog::{PredictionLog, PredictionRecord};
use super::protocol::{
    messages, now_ns, signature_message, NonceOk, NonceTracker, RequestHeaders, EMPTY_BODY_HASH,
    SYNAPSE_NAME,
};
use super::ratelog::RateLog;
use super::response::{error_response, fastapi_422, plain_json, py_float, success_response, Resp};
use super::telemetry::{Batcher, ModelSlot};
use crate::chain::MetagraphHandle;
use crate::infer::Outcome;
use crate::keys::{ss58_decode, verify_sr25519, SignatureError};

/// What every request shares.
pub struct State {
    pub opts: ServeOptions,
    pub metagraph: Arc<MetagraphHandle>,
    pub nonces: NonceTracker,
    pub batcher: Arc<Batcher>,
    pub slot: Arc<ModelSlot>,
    pub metrics: Arc<Metrics>,
    pub plog: Option<PredictionLog>,
    pub images: ImageLanes,
    pub events: RateLog,
}

struct InFlight(Arc<Metrics>);
impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Answers one request on connection `conn`.
pub async fn handle(state: Arc<State>, conn: Arc<Conn>, req: Request<Incoming>) -> Resp {
    state.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let _guard = InFlight(state.metrics.clone());
    let started = Instant::now();
    let path = req.uri().path().to_string();
    if path == "/healthz" || path == "/metrics" {
        state.metrics.probes.inc(&[&path[1..]]);
        return probe_route(&state, &req, &path);
    }
    let (route, resp, outcome) = synapse_route(&state, &conn, req, &path, started).await;
    state
        .metrics
        .requests
        .inc(&[route, resp.status().as_str(), outcome]);
    resp
}

fn probe_route(state: &State, req: &Request<Incoming>, path: &str) -> Resp {
    if req.method() != Method::GET {
        return plain_json(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"detail": "Method Not Allowed"}),
        );
    }
    if path == "/healthz" {
        return plain_json(
            StatusCode::OK,
            json!({"status": "ok", "model": state.slot.version(),
                   "validators": state.metagraph.get().len()}),
        );
    }
    let mut r = Response::new(Full::new(Bytes::from(state.metrics.render())));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Image,
    Ping,
}

/// (route label, response, outcome label).
async fn synapse_route(
    state: &State,
    conn: &Conn,
    req: Request<Incoming>,
    path: &str,
    started: Instant,
) -> (&'static str, Resp, &'static str) {
    let peer = conn.peer;
    let mut segs = path.trim_start_matches('/').split('/');
    let first = segs.next().unwrap_or("");
    let extra = segs.next().is_some();
    let (kind, route) = match first {
        SYNAPSE_NAME => (Kind::Image, SYNAPSE_NAME),
        "Synapse" => (Kind::Ping, "Synapse"),
        other => {
            let h = RequestHeaders::parse(req.headers()).unwrap_or_default();
            let msg = messages::unknown_synapse(other);
            rejected(
                state,
                &h,
                peer,
                "unknown_synapse",
                StatusCode::NOT_FOUND,
                &msg,
                None,
            );
            let r = error_response(
                &state.opts.axon_hotkey,
                &h,
                peer,
                StatusCode::NOT_FOUND,
                &msg,
                started,
            );
            return ("other", r, "rejected");
        }
    };
    if extra || (req.method() != Method::POST && req.method() != Method::GET) {
        let (reason, status, detail) = if extra {
            ("not_found", StatusCode::NOT_FOUND, "Not Found")
        } else {
            (
                "method_not_allowed",
                StatusCode::METHOD_NOT_ALLOWED,
                "Method Not Allowed",
            )
        };
        rejected(
            state,
            &RequestHeaders::default(),
            peer,
            reason,
            status,
            detail,
            None,
        );
        return (
            route,
            plain_json(status, json!({"detail": detail})),
            "rejected",
        );
    }
    match pipeline(state, conn, req, kind, started).await {
        Ok((r, outcome)) => (route, r, outcome),
        Err(r) => {
            rejected(state, &r.h, peer, r.reason, r.status, &r.message, r.detail);
            let resp = error_response(
                &state.opts.axon_hotkey,
                &r.h,
                peer,
                r.status,
                &r.message,
                started,
            );
            (route, resp, "rejected")
        }
    }
}

/// Counts a rejection and writes its (rate-limited) log line.
fn rejected(
    state: &State,
    h: &RequestHeaders,
    peer: SocketAddr,
    reason: &'static str,
    status: StatusCode,
    message: &str,
    detail: Option<String>,
) {
    state.metrics.reject(reason);
    let level = if status.is_server_error() {
        "warn"
    } else {
        "info"
    };
    state.events.log(
        level,
        "request_rejected",
        reason,
        json!({"status": status.as_u16(), "hotkey": h.dendrite_hotkey, "peer": peer.to_string(),
               "message": message, "detail": detail}),
    );
}

/// A refused request: the headers read so far, the reason label, the answer, and a detail for
/// the log only (the Python axon's 500 text carries no detail).
struct Reject {
    h: RequestHeaders,
    reason: &'static str,
    status: StatusCode,
    message: String,
    detail: Option<String>,
}

fn reject(h: &RequestHeaders, reason: &'static str, status: StatusCode, msg: String) -> Reject {
    Reject {
        h: h.clone(),
        reason,
        status,
        message: msg,
        detail: None,
    }
}

impl Reject {
    fn detail(mut self, d: String) -> Self {
        self.detail = Some(d);
        self
    }
}

/// The query's answer deadline: `serve.answer_deadline_ms`, shortened for a `timeout` header
/// below it (one second kept for the way back, at least half of that timeout used).
fn deadline_of(opts: &ServeOptions, h: &RequestHeaders, started: Instant) -> Instant {
    let mut d = opts.answer_deadline;
    if let Some(t) = h.timeout.filter(|t| t.is_finite() && *t > 0.0) {
        let t = t.min(3600.0);
        d = d.min(Duration::from_secs_f64((t - 1.0).max(t / 2.0)));
    }
    started + d
}

/// The steps after routing; `Ok` carries the outcome label (`scored`, `fallback`, `ok`).
async fn pipeline(
    state: &State,
    conn: &Conn,
    req: Request<Incoming>,
    kind: Kind,
    started: Instant,
) -> Result<(Resp, &'static str), Reject> {
    let peer = conn.peer;
    let h = match RequestHeaders::parse(req.headers()) {
        Ok(h) => h,
        Err(e) => {
            let h = RequestHeaders::default();
            return Err(reject(
                &h,
                "bad_headers",
                StatusCode::INTERNAL_SERVER_ERROR,
                messages::internal_error(),
            )
            .detail(e.0));
        }
    };
    let deadline = deadline_of(&state.opts, &h, started);

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

    match verify(state, &h) {
        Ok(NonceOk::Reordered) => {
            state
                .metrics
                .nonces_reordered
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(NonceOk::Newer) => {}
        Err((reason, detail)) => {
            return Err(reject(
                &h,
                reason,
                StatusCode::UNAUTHORIZED,
                messages::not_verified(&detail),
            ))
        }
    }
    conn.mark_verified();

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
    let body_by = (Instant::now() + state.opts.body_read_timeout).min(deadline);
    let body = Limited::new(req.into_body(), max);
    let bytes = match tokio::time::timeout_at(
        tokio::time::Instant::from_std(body_by),
        body.collect(),
    )
    .await
    {
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
            let status = StatusCode::UNPROCESSABLE_ENTITY;
            rejected(
                state,
                &h,
                peer,
                "bad_json",
                status,
                "not JSON",
                Some(e.to_string()),
            );
            return Ok((fastapi_422(&e.to_string()), "rejected"));
        }
    };
    drop(bytes);
    let Value::Object(mut body) = value else {
        let status = StatusCode::UNPROCESSABLE_ENTITY;
        rejected(state, &h, peer, "bad_json", status, "not an object", None);
        return Ok((
            fastapi_422("Input should be a valid dictionary"),
            "rejected",
        ));
    };
    if let Err(field) = check_body_types(&body) {
        return Err(reject(
            &h,
            "bad_body",
            StatusCode::INTERNAL_SERVER_ERROR,
            messages::internal_error(),
        )
        .detail(format!("body field {field} has the wrong type")));
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
    let mut outcome = "ok";
    if kind == Kind::Image {
        let image_b64 = match body.get_mut("image") {
            Some(Value::String(s)) => std::mem::take(s),
            _ => String::new(),
        };
        let echo = state.opts.echo_image.then(|| image_b64.clone());
        let f = forward(state, &h, peer, image_b64, stake, deadline).await?;
        outcome = if f.scored { "scored" } else { "fallback" };
        body.insert("prediction".into(), py_float(f.prediction));
        match echo {
            Some(b64) => {
                body.insert("image".into(), Value::String(b64));
            }
            None => {
                body.remove("image");
            }
        }
        let latency = started.elapsed().as_secs_f64();
        state.metrics.latency_seconds.observe(latency);
        state.metrics.prediction.observe(f.prediction as f64);
        if let Some(log) = &state.plog {
            log.record(PredictionRecord {
                time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                validator: h.dendrite_hotkey.clone().unwrap_or_default(),
                image_hash: f.hash,
                prediction: f.prediction,
                scored: f.scored,
                partial: f.partial,
                latency_ms: latency * 1000.0,
                model: state.slot.version(),
                image: f.bytes.filter(|_| (0.4..=0.6).contains(&f.prediction)),
            });
        }
    }
    let process_time = forward_start.elapsed().as_secs_f64();
    Ok((
        success_response(&state.opts.axon_hotkey, &h, body, process_time),
        outcome,
    ))
}

/// Signature and nonce verification, returning (metric reason, detail text) on failure.
fn verify(state: &State, h: &RequestHeaders) -> Result<NonceOk, (&'static str, String)> {
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
    // Cheap refusal of stale nonces and replays before the signature costs anything.
    state
        .nonces
        .check(&key, h, now)
        .map_err(|e| (e.reason(), e.to_string()))?;
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
    // Checked again and recorded under one lock: of two copies only one passes.
    state
        .nonces
        .check_and_record(&key, h, now)
        .map_err(|e| (e.reason(), e.to_string()))
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

/// What the forward produced.
struct Forwarded {
    prediction: f32,
    hash: String,
    /// Scored by the model (false: the fallback).
    scored: bool,
    partial: bool,
    /// The image file, for the low-confidence store.
    bytes: Option<Vec<u8>>,
}

/// Decode and inference by `deadline`; the fallback for anything that fails or is late.
async fn forward(
    state: &State,
    h: &RequestHeaders,
    peer: SocketAddr,
    image_b64: String,
    stake: f64,
    deadline: Instant,
) -> Result<Forwarded, Reject> {
    let fallback = state.opts.fallback_prediction;
    let fall = |reason: &'static str, hash: String, partial: bool, bytes: Option<Vec<u8>>| {
        state.metrics.fallbacks.inc(&[reason]);
        Forwarded {
            prediction: fallback,
            hash,
            scored: false,
            partial,
            bytes,
        }
    };
    let t = Instant::now();
    let decoded = state.images.decode(image_b64, deadline).await;
    state
        .metrics
        .decode_seconds
        .observe(t.elapsed().as_secs_f64());
    let d = match decoded {
        Ok(d) => d,
        Err(e) => {
            state
                .metrics
                .decode_failures
                .fetch_add(1, Ordering::Relaxed);
            let partial = e.reason == "truncated";
            if partial {
                state.metrics.partial_images.fetch_add(1, Ordering::Relaxed);
                state.events.log(
                    "warn",
                    "image_partial",
                    "jpeg_truncated",
                    json!({"detail": e.detail, "hotkey": h.dendrite_hotkey,
                           "peer": peer.to_string(), "image_hash": e.hash, "prediction": fallback,
                           "note": "JPEG ends before its end-of-image marker; Pillow refuses it"}),
                );
            } else {
                state.events.log(
                    "warn",
                    "image_decode_failed",
                    e.reason,
                    json!({"detail": e.detail, "hotkey": h.dendrite_hotkey,
                           "peer": peer.to_string(), "image_hash": e.hash, "prediction": fallback}),
                );
            }
            let reason = match e.reason {
                "decode_busy" | "decode_timeout" => e.reason,
                _ => "decode_failed",
            };
            return Ok(fall(reason, e.hash, partial, None));
        }
    };
    let (hash, lane, place) = (d.hash, d.lane, d.place);
    let bytes = Some(d.bytes);
    let rx = state.batcher.submit(d.image, stake);
    // A large image keeps its lane place until inference is done with it, even past the
    // deadline, so at most `max_large_images` of them are ever in memory. A small one gives its
    // place back at the deadline and its queued job is skipped, so a slow model never works on
    // answers nobody waits for.
    let rx = match lane {
        Lane::Large => {
            let (tx, done) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let r = rx.await;
                drop(place);
                let _ = tx.send(r.ok());
            });
            OutcomeWait::Held(done)
        }
        Lane::Small => OutcomeWait::Direct(rx, place),
    };
    let outcome =
        tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), rx.wait()).await;
    match outcome {
        Ok(Some(Outcome::Scored(p))) => Ok(Forwarded {
            prediction: p,
            hash,
            scored: true,
            partial: false,
            bytes,
        }),
        Ok(Some(Outcome::Fallback(_))) => Ok(fall("predictor_failed", hash, false, bytes)),
        // Dropped from a full queue for higher-stake work: the fallback still scores better
        // than an error, which validators score 0.
        Ok(Some(Outcome::Shed)) => {
            state.events.log(
                "warn",
                "inference_queue_full",
                "queue_full",
                json!({"hotkey": h.dendrite_hotkey, "image_hash": hash, "prediction": fallback,
                       "note": "dropped for higher-stake queries (serve.queue_capacity)"}),
            );
            Ok(fall("queue_full", hash, false, bytes))
        }
        Ok(None) | Err(_) => {
            state.events.log(
                "warn",
                "inference_timeout",
                "inference_timeout",
                json!({"hotkey": h.dendrite_hotkey, "image_hash": hash, "prediction": fallback}),
            );
            Ok(fall("inference_timeout", hash, false, bytes))
        }
    }
}

/// Waiting for the inference thread's answer, directly or through the place-holding task.
enum OutcomeWait {
    Direct(
        tokio::sync::oneshot::Receiver<Outcome>,
        tokio::sync::OwnedSemaphorePermit,
    ),
    Held(tokio::sync::oneshot::Receiver<Option<Outcome>>),
}

impl OutcomeWait {
    async fn wait(self) -> Option<Outcome> {
        match self {
            OutcomeWait::Direct(rx, _place) => rx.await.ok(),
            OutcomeWait::Held(rx) => rx.await.ok().flatten(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_follows_the_timeout_header() {
        let hotkey = crate::keys::ss58_encode(&[7; 32], 42);
        let opts =
            ServeOptions::from_config(&crate::config::ServeConfig::default(), hotkey).unwrap();
        let t0 = Instant::now();
        let mut h = RequestHeaders::default();
        let d = |h: &RequestHeaders| deadline_of(&opts, h, t0) - t0;
        assert_eq!(d(&h), Duration::from_millis(7500));
        h.timeout = Some(9.0);
        assert_eq!(d(&h), Duration::from_millis(7500));
        h.timeout = Some(4.0);
        assert_eq!(d(&h), Duration::from_secs(3));
        h.timeout = Some(1.0);
        assert_eq!(d(&h), Duration::from_millis(500));
    }
}
