//! The axon's answers: the bittensor success and error shapes, FastAPI's own errors, headers.

use std::net::SocketAddr;
use std::time::Instant;

use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Bytes;
use serde_json::{json, Map, Value};

use super::protocol::{RequestHeaders, AXON_VERSION, SYNAPSE_NAME};

/// The response type of every route.
pub type Resp = Response<Full<Bytes>>;

/// A float as the shortest text that round-trips through f32 (0.73, not 0.7300000190734863).
pub fn py_float(p: f32) -> Value {
    let v: f64 = format!("{p}").parse().unwrap_or(p as f64);
    serde_json::Number::from_f64(v).map_or(Value::from(0.5), Value::Number)
}

pub fn plain_json(status: StatusCode, body: Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// FastAPI's 422 for a body that is not a JSON object.
pub fn fastapi_422(err: &str) -> Resp {
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

/// A bittensor error answer: `{"message"}` and the header-side synapse, as the Python axon.
pub fn error_response(
    axon_hotkey: &str,
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
        put(out, "bt_header_axon_hotkey", axon_hotkey);
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

/// The 200 answer: the body synapse with `axon` filled in, and the echoed headers.
pub fn success_response(
    axon_hotkey: &str,
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
        put(out, "bt_header_axon_hotkey", axon_hotkey);
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
