//! The HTTP client of the generation backends: timeouts, retries with exponential back-off where
//! a repeat is safe, the credential kept to the endpoint's origin and out of every message.

use std::fmt;
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

/// Largest answer read (a batch of base64 PNGs at 2048² stays well under this).
const MAX_BODY: u64 = 512 << 20;

/// A credential; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Option<Self> {
        let s = s.into();
        (!s.trim().is_empty()).then(|| Secret(s.trim().to_string()))
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How the credential is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// `Authorization: Basic base64(<user:password>)` (A1111 `--api-auth`).
    Basic,
}

/// Attempts and waits of retried calls.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    pub first: Duration,
    pub max: Duration,
}

impl Retry {
    /// The wait before attempt `n + 1` (n ≥ 1): first · 2^(n−1), capped.
    fn wait(&self, n: u32) -> Duration {
        let f = self.first.as_millis() as u64;
        let ms = f.saturating_mul(1u64 << (n - 1).min(20));
        Duration::from_millis(ms).min(self.max)
    }
}

/// Whether a call may be sent again after an answer that may mean it was carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// Reads, uploads that overwrite, seeded generation on the user's own server.
    Safe,
    /// Paid generation or a queue insert: repeated only when the server surely did nothing
    /// (429, 503, connection refused).
    Unsafe,
}

/// A request body.
pub enum Body<'a> {
    Empty,
    Json(&'a Value),
    Multipart(&'a Multipart),
}

/// A complete answer with a 2xx status.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self, what: &str) -> Result<Value> {
        serde_json::from_slice(&self.body).map_err(|e| {
            anyhow!(
                "{what}: the answer is not JSON ({e}): {}",
                snippet(&self.body)
            )
        })
    }
}

/// An error answer, after the retries.
#[derive(Debug)]
pub struct StatusError {
    pub status: u16,
    pub message: String,
}

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.message)
    }
}

impl std::error::Error for StatusError {}

/// `scheme://host[:port]` of a URL.
pub fn origin(url: &str) -> &str {
    let after = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[after..].find('/') {
        Some(j) => &url[..after + j],
        None => url,
    }
}

/// The first bytes of a body, for error messages.
pub fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(400)]);
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The client.
pub struct Http {
    agent: ureq::Agent,
    endpoint: String,
    key: Option<Secret>,
    auth: Auth,
    retry: Retry,
}

enum Attempt {
    Done(Reply),
    /// Try again (after `Option` wait, else the back-off) while attempts remain.
    Again(anyhow::Error, Option<Duration>),
    Fail(anyhow::Error),
}

impl Http {
    /// A client for `endpoint` (credential sent only to its origin); `timeout` bounds each call.
    pub fn new(
        endpoint: &str,
        key: Option<Secret>,
        auth: Auth,
        timeout: Duration,
        retry: Retry,
    ) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30).min(timeout)))
            .timeout_global(Some(timeout))
            .max_redirects(0)
            .build()
            .into();
        Http {
            agent,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            key,
            auth,
            retry,
        }
    }

    /// `endpoint` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint)
    }

    /// Removes the credential from text that may reach the user.
    pub fn redact(&self, s: &str) -> String {
        match &self.key {
            Some(k) => s.replace(k.expose(), "<redacted>"),
            None => s.to_string(),
        }
    }

    fn auth_header(&self, url: &str) -> Option<String> {
        use base64::Engine;
        let key = self.key.as_ref()?;
        if origin(url) != origin(&self.endpoint) {
            return None;
        }
        Some(match self.auth {
            Auth::Bearer => format!("Bearer {}", key.expose()),
            Auth::Basic => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(key.expose())
            ),
        })
    }

    pub fn get(&self, url: &str, what: &str) -> Result<Reply> {
        self.call("GET", url, Body::Empty, Repeat::Safe, what)
    }

    pub fn post(&self, url: &str, body: Body<'_>, repeat: Repeat, what: &str) -> Result<Reply> {
        self.call("POST", url, body, repeat, what)
    }

    /// Sends the request until it succeeds, fails for good, or the attempts run out.
    pub fn call(
        &self,
        method: &str,
        url: &str,
        body: Body<'_>,
        repeat: Repeat,
        what: &str,
    ) -> Result<Reply> {
        let mut n = 1;
        loop {
            match self.attempt(method, url, &body, repeat, what) {
                Attempt::Done(r) => return Ok(r),
                Attempt::Fail(e) => return Err(e),
                Attempt::Again(e, after) => {
                    if n >= self.retry.attempts {
                        return Err(e.context(format!("{what}: gave up after {n} attempt(s)")));
                    }
                    let wait = after
                        .unwrap_or_else(|| self.retry.wait(n))
                        .min(self.retry.max);
                    thread::sleep(wait);
                    n += 1;
                }
            }
        }
    }

    fn attempt(
        &self,
        method: &str,
        url: &str,
        body: &Body<'_>,
        repeat: Repeat,
        what: &str,
    ) -> Attempt {
        let shown = self.redact(url);
        let mut req = ureq::http::Request::builder().method(method).uri(url);
        if let Some(a) = self.auth_header(url) {
            req = req.header("Authorization", a);
        }
        let bytes: Option<Vec<u8>> = match body {
            Body::Empty => None,
            Body::Json(v) => {
                req = req.header("Content-Type", "application/json");
                Some(v.to_string().into_bytes())
            }
            Body::Multipart(m) => {
                req = req.header("Content-Type", m.content_type());
                Some(m.body.clone())
            }
        };
        let sent = match bytes {
            None => req.body(()).map(|r| self.agent.run(r)),
            Some(b) => req.body(b).map(|r| self.agent.run(r)),
        };
        let sent = match sent {
            Ok(s) => s,
            Err(e) => return Attempt::Fail(anyhow!("{what}: bad request for {shown}: {e}")),
        };
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => {
                let nothing_sent = matches!(
                    e,
                    ureq::Error::ConnectionFailed | ureq::Error::Timeout(ureq::Timeout::Connect)
                ) || matches!(&e, ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused);
                let err = anyhow!(
                    "{what}: {method} {shown} failed: {}",
                    self.redact(&e.to_string())
                );
                return if nothing_sent || repeat == Repeat::Safe {
                    Attempt::Again(err, None)
                } else {
                    Attempt::Fail(err.context(
                        "not repeated: the server may have done the work (re-run to retry; finished images are kept)",
                    ))
                };
            }
        };
        let status = resp.status().as_u16();
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.trim().to_string())
        };
        let content_type = header("content-type");
        let retry_after = header("retry-after")
            .and_then(|s| s.parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = match resp.body_mut().with_config().limit(MAX_BODY).read_to_vec() {
            Ok(b) => b,
            Err(e) => {
                let err = anyhow!("{what}: reading the answer of {shown} failed: {e}");
                return if repeat == Repeat::Safe {
                    Attempt::Again(err, None)
                } else {
                    Attempt::Fail(err)
                };
            }
        };
        if (200..300).contains(&status) {
            return Attempt::Done(Reply {
                status,
                content_type,
                body,
            });
        }
        let err = anyhow::Error::new(StatusError {
            status,
            message: self.redact(&error_message(&body)),
        })
        .context(format!("{what}: {method} {shown}"));
        match status {
            // The server refused the work: always safe to ask again.
            429 | 503 => Attempt::Again(err, retry_after),
            500 | 502 | 504 if repeat == Repeat::Safe => Attempt::Again(err, None),
            401 | 403 => Attempt::Fail(err.context(
                "not authorised: check the API key in the environment variable named by generate.api_key_env",
            )),
            _ => Attempt::Fail(err),
        }
    }
}

/// The server's own words: `error.message`, `error`, `detail`, else the body.
fn error_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        let pick = v
            .pointer("/error/message")
            .or_else(|| v.get("error"))
            .or_else(|| v.get("detail"))
            .or_else(|| v.get("message"));
        if let Some(p) = pick {
            let mut m = match p {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            // ComfyUI puts the useful part of a rejected workflow here.
            if let Some(ne) = v
                .get("node_errors")
                .filter(|n| n.as_object().is_some_and(|o| !o.is_empty()))
            {
                m.push_str(&format!(
                    "; node_errors: {}",
                    snippet(ne.to_string().as_bytes())
                ));
            }
            return m;
        }
    }
    snippet(body)
}

/// Checks that `bytes` are an image that decodes far enough to know its size; returns the size
/// and the usual file extension.
pub fn check_image_bytes(bytes: &[u8], what: &str) -> Result<(u32, u32, &'static str)> {
    let fmt = image::guess_format(bytes).map_err(|_| {
        anyhow!(
            "{what}: the server sent something that is not an image ({} bytes)",
            bytes.len()
        )
    })?;
    let ext = fmt.extensions_str().first().copied().unwrap_or("img");
    let (w, h) = image::ImageReader::with_format(std::io::Cursor::new(bytes), fmt)
        .into_dimensions()
        .map_err(|e| anyhow!("{what}: the image the server sent does not decode: {e}"))?;
    if w == 0 || h == 0 {
        bail!("{what}: the server sent an empty image");
    }
    Ok((w, h, ext))
}

/// A `multipart/form-data` body (ureq has no stable multipart API; the format is small).
pub struct Multipart {
    boundary: String,
    body: Vec<u8>,
}

impl Multipart {
    pub fn new(seed: &str) -> Self {
        Multipart {
            boundary: format!("sv72-{}", &blake3::hash(seed.as_bytes()).to_hex()[..24]),
            body: Vec::new(),
        }
    }

    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    pub fn text(mut self, name: &str, value: &str) -> Self {
        self.head(name, None, None);
        self.body.extend_from_slice(value.as_bytes());
        self.body.extend_from_slice(b"\r\n");
        self
    }

    pub fn file(mut self, name: &str, filename: &str, mime: &str, bytes: &[u8]) -> Self {
        self.head(name, Some(filename), Some(mime));
        self.body.extend_from_slice(bytes);
        self.body.extend_from_slice(b"\r\n");
        self
    }

    fn head(&mut self, name: &str, filename: Option<&str>, mime: Option<&str>) {
        let clean = |s: &str| s.replace(['"', '\r', '\n'], "_");
        let mut h = format!(
            "--{}\r\nContent-Disposition: form-data; name=\"{}\"",
            self.boundary,
            clean(name)
        );
        if let Some(f) = filename {
            h.push_str(&format!("; filename=\"{}\"", clean(f)));
        }
        h.push_str("\r\n");
        if let Some(m) = mime {
            h.push_str(&format!("Content-Type: {m}\r\n"));
        }
        h.push_str("\r\n");
        self.body.extend_from_slice(h.as_bytes());
    }

    /// Closes the body.
    pub fn finish(mut self) -> Self {
        self.body
            .extend_from_slice(format!("--{}--\r\n", self.boundary).as_bytes());
        self
    }
}

/// MIME type of an image file from its bytes.
pub fn mime_of(bytes: &[u8]) -> &'static str {
    match image::guess_format(bytes) {
        Ok(image::ImageFormat::Png) => "image/png",
        Ok(image::ImageFormat::Jpeg) => "image/jpeg",
        Ok(image::ImageFormat::WebP) => "image/webp",
        Ok(image::ImageFormat::Gif) => "image/gif",
        Ok(image::ImageFormat::Bmp) => "image/bmp",
        Ok(image::ImageFormat::Tiff) => "image/tiff",
        _ => "application/octet-stream",
    }
}

/// Percent-encodes a query value.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let r = Retry {
            attempts: 9,
            first: Duration::from_millis(100),
            max: Duration::from_millis(700),
        };
        let w: Vec<u64> = (1..6).map(|n| r.wait(n).as_millis() as u64).collect();
        assert_eq!(w, [100, 200, 400, 700, 700]);
    }

    #[test]
    fn secret_debug_hides_the_key() {
        let s = Secret::new("sk-very-secret").unwrap();
        assert!(!format!("{s:?}").contains("very-secret"));
        assert!(Secret::new("  ").is_none());
    }

    #[test]
    fn multipart_layout() {
        let m = Multipart::new("x")
            .text("prompt", "a road")
            .file("image", "a.png", "image/png", b"PNGDATA")
            .finish();
        let body = String::from_utf8_lossy(&m.body);
        let b = m.boundary.clone();
        assert!(m.content_type().ends_with(&b));
        assert!(body.starts_with(&format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\na road\r\n"
        )));
        assert!(body.contains(
            "name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\nPNGDATA\r\n"
        ));
        assert!(body.ends_with(&format!("--{b}--\r\n")));
    }

    #[test]
    fn query_escape_reserved() {
        assert_eq!(query_escape("a b/c&d.png"), "a%20b%2Fc%26d.png");
    }
}
