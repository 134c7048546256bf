//! The dendrite ⇄ axon wire rules for `ImageSynapse` (see `shared/specs/axon-protocol.md`):
//! request headers, the signed message, nonce freshness and replay rules, and the texts of the
//! Python axon's answers.

use std::collections::HashMap;
use std::sync::Mutex;

use http::HeaderMap;

/// The synapse class name, also the route's first path segment.
pub const SYNAPSE_NAME: &str = "ImageSynapse";
/// `computed_body_hash` of `ImageSynapse`: SHA3-256 of the empty string (no hash fields).
pub const EMPTY_BODY_HASH: &str =
    "a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a";
/// Dendrite version from which the nonce time window applies (7.2.0).
pub const V_7_2_0: i128 = 7_002_000;
/// The bittensor version this axon answers as (9.12.2).
pub const AXON_VERSION: u64 = 9_012_002;
/// Base of the nonce window for a first request, in ns (added to the `timeout` header).
pub const NONCE_BASE_WINDOW_NS: i128 = 4_000_000_000;
/// The `timeout` header is unsigned; cap what it may add to the nonce window.
pub const MAX_TIMEOUT_FOR_WINDOW_S: f64 = 60.0;

/// Computes bittensor's body hash for a list of hash-field texts (empty for `ImageSynapse`).
pub fn body_hash(field_texts: &[&str]) -> String {
    use sha3::{Digest, Sha3_256};
    let joined: String = field_texts
        .iter()
        .map(|t| hex::encode(Sha3_256::digest(t.as_bytes())))
        .collect();
    hex::encode(Sha3_256::digest(joined.as_bytes()))
}

/// The text a dendrite signs: `nonce.dendrite_hotkey.axon_hotkey.uuid.body_hash`.
pub fn signature_message(
    nonce: i128,
    dendrite_hotkey: &str,
    axon_hotkey: &str,
    uuid: Option<&str>,
    body_hash: Option<&str>,
) -> String {
    format!(
        "{nonce}.{dendrite_hotkey}.{axon_hotkey}.{}.{}",
        uuid.unwrap_or("None"),
        body_hash.unwrap_or("None")
    )
}

/// The request's bittensor headers, read case-insensitively.
#[derive(Debug, Clone, Default)]
pub struct RequestHeaders {
    pub name: Option<String>,
    pub timeout: Option<f64>,
    pub dendrite_hotkey: Option<String>,
    pub dendrite_nonce: Option<i128>,
    pub dendrite_uuid: Option<String>,
    pub dendrite_signature: Option<String>,
    pub dendrite_version: Option<i128>,
    pub computed_body_hash: Option<String>,
    /// Every `bt_header_*`, `header_size`, `total_size`, `name`, `timeout` and
    /// `computed_body_hash` header as received, for echoing.
    pub echo: Vec<(String, String)>,
}

/// A header value that does not parse as its field's type; the Python axon answers 500.
#[derive(Debug, Clone)]
pub struct HeaderParseError(pub String);

fn text(headers: &HeaderMap, name: &str) -> Result<Option<String>, HeaderParseError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.to_string()))
            .map_err(|_| HeaderParseError(format!("header {name} is not visible ASCII"))),
    }
}

/// Python `int()` of a header: surrounding spaces and one sign allowed, `0123` is 123.
fn parse_int(name: &str, s: &str) -> Result<i128, HeaderParseError> {
    s.trim()
        .replace('_', "")
        .parse::<i128>()
        .map_err(|_| HeaderParseError(format!("header {name} = {s:?} is not an integer")))
}

impl RequestHeaders {
    /// Reads the headers the axon uses; a typed field that does not parse is an error (500).
    pub fn parse(headers: &HeaderMap) -> Result<Self, HeaderParseError> {
        let mut out = RequestHeaders {
            name: text(headers, "name")?,
            dendrite_hotkey: text(headers, "bt_header_dendrite_hotkey")?,
            dendrite_uuid: text(headers, "bt_header_dendrite_uuid")?,
            dendrite_signature: text(headers, "bt_header_dendrite_signature")?,
            computed_body_hash: text(headers, "computed_body_hash")?,
            ..Default::default()
        };
        if let Some(t) = text(headers, "timeout")? {
            let v: f64 = t
                .trim()
                .parse()
                .map_err(|_| HeaderParseError(format!("header timeout = {t:?} is not a float")))?;
            out.timeout = Some(v);
        }
        if let Some(n) = text(headers, "bt_header_dendrite_nonce")? {
            out.dendrite_nonce = Some(parse_int("bt_header_dendrite_nonce", &n)?);
        }
        if let Some(n) = text(headers, "bt_header_dendrite_version")? {
            out.dendrite_version = Some(parse_int("bt_header_dendrite_version", &n)?);
        }
        for (k, v) in headers {
            let k = k.as_str();
            let echoed = k.starts_with("bt_header_")
                || matches!(
                    k,
                    "name" | "timeout" | "header_size" | "total_size" | "computed_body_hash"
                );
            if echoed {
                if let Ok(v) = v.to_str() {
                    out.echo.push((k.to_string(), v.to_string()));
                }
            }
        }
        Ok(out)
    }

    /// An echoed header value by (lowercase) name.
    pub fn echoed(&self, name: &str) -> Option<&str> {
        self.echo
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a nonce was refused; `Display` gives the Python axon's text.
#[derive(Debug, Clone, PartialEq)]
pub enum NonceError {
    Missing,
    /// First request of a key, older than the window.
    TooOld {
        allowed_s: f64,
        age_s: f64,
    },
    /// Not newer than the last accepted nonce of this key (replays land here).
    NotNewer,
}

impl std::fmt::Display for NonceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NonceError::Missing => write!(f, "Missing Nonce"),
            NonceError::TooOld { allowed_s, age_s } => write!(
                f,
                "Nonce is too old: acceptable delta is {allowed_s:.2} seconds but request was \
                 {age_s:.2} seconds old"
            ),
            NonceError::NotNewer => write!(f, "Nonce is too old, a newer one was last processed"),
        }
    }
}

/// Last accepted nonce per `hotkey:uuid`, as the Python axon keeps it, but bounded.
///
/// Keys come only from blacklist-approved hotkeys with a valid signature (a few validators, one
/// uuid per validator process), so the map stays small; the cap is a backstop that drops the
/// keys with the oldest nonces first.
pub struct NonceTracker {
    last: Mutex<HashMap<String, i128>>,
    capacity: usize,
}

impl NonceTracker {
    /// A tracker holding at most `capacity` keys.
    pub fn new(capacity: usize) -> Self {
        Self {
            last: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// The key the Python axon uses.
    pub fn key(hotkey: &str, uuid: Option<&str>) -> String {
        format!("{hotkey}:{}", uuid.unwrap_or("None"))
    }

    /// Applies the freshness rules without recording anything.
    pub fn check(&self, key: &str, h: &RequestHeaders, now_ns: i128) -> Result<(), NonceError> {
        let nonce = h.dendrite_nonce.ok_or(NonceError::Missing)?;
        let last = self.lock().get(key).copied();
        check_nonce(nonce, last, h.dendrite_version, h.timeout, now_ns)
    }

    /// Records an accepted nonce, re-checking under the lock so two concurrent copies of one
    /// request cannot both pass.
    pub fn check_and_record(
        &self,
        key: &str,
        h: &RequestHeaders,
        now_ns: i128,
    ) -> Result<(), NonceError> {
        let nonce = h.dendrite_nonce.ok_or(NonceError::Missing)?;
        let mut map = self.lock();
        let last = map.get(key).copied();
        check_nonce(nonce, last, h.dendrite_version, h.timeout, now_ns)?;
        if last.is_none() && map.len() >= self.capacity {
            // Drop the half of the keys with the oldest nonces.
            let mut all: Vec<i128> = map.values().copied().collect();
            all.sort_unstable();
            let cut = all[all.len() / 2];
            map.retain(|_, v| *v > cut);
        }
        map.insert(key.to_string(), nonce);
        Ok(())
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, i128>> {
        // A poisoned map is still a valid map of nonces.
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The nonce rule of bittensor's `default_verify`.
pub fn check_nonce(
    nonce: i128,
    last: Option<i128>,
    version: Option<i128>,
    timeout_s: Option<f64>,
    now_ns: i128,
) -> Result<(), NonceError> {
    let windowed = version.is_some_and(|v| v >= V_7_2_0);
    if let Some(last) = last {
        if nonce <= last {
            return Err(NonceError::NotNewer);
        }
        return Ok(());
    }
    if windowed {
        let t = timeout_s
            .filter(|t| t.is_finite())
            .unwrap_or(0.0)
            .clamp(0.0, MAX_TIMEOUT_FOR_WINDOW_S);
        let window_ns = NONCE_BASE_WINDOW_NS + (t * 1e9) as i128;
        if nonce <= now_ns - window_ns {
            return Err(NonceError::TooOld {
                allowed_s: window_ns as f64 / 1e9,
                age_s: (now_ns - nonce) as f64 / 1e9,
            });
        }
    }
    Ok(())
}

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// Texts of the Python axon's status messages.
pub mod messages {
    /// 403 text for a blacklist `reason`.
    pub fn blacklisted(reason: &str) -> String {
        format!("Forbidden. Key is blacklisted: {reason}.")
    }
    /// 401 text for a verification failure.
    pub fn not_verified(detail: &str) -> String {
        format!("Not Verified with error: {detail}")
    }
    /// 404 text for an unknown synapse name.
    pub fn unknown_synapse(name: &str) -> String {
        format!("Synapse name '{name}' not found. Available synapses ['Synapse', 'ImageSynapse']")
    }
    /// 500 text with a fresh error id (a random uuid4, as the Python axon logs it).
    pub fn internal_error() -> String {
        format!("Internal Server Error #{}", uuid4())
    }
    /// A random version-4 UUID string.
    pub fn uuid4() -> String {
        uuid::Uuid::new_v4().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_body_hash_is_sha3_of_nothing() {
        assert_eq!(body_hash(&[]), EMPTY_BODY_HASH);
        // The spec's illustration for a class hashing `image`.
        assert_eq!(
            body_hash(&["/9j/4AAQ"]),
            "4997cd501a2be9992ee7599a55ffe4d86e331b0cfab0553e2a0681f9d769f821"
        );
    }

    #[test]
    fn message_uses_none_for_missing_fields() {
        assert_eq!(
            signature_message(12, "a", "b", None, Some("h")),
            "12.a.b.None.h"
        );
    }

    #[test]
    fn nonce_window_and_replay() {
        let now: i128 = 1_000_000_000_000_000_000;
        let s = 1_000_000_000i128;
        // 9 s timeout: up to 13 s old accepted on the first request.
        assert!(check_nonce(now - 12 * s, None, Some(9_012_002), Some(9.0), now).is_ok());
        let e = check_nonce(now - 14 * s, None, Some(9_012_002), Some(9.0), now).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Nonce is too old: acceptable delta is 13.00 seconds but request was 14.00 seconds old"
        );
        // No timeout header: 4 s window.
        assert!(check_nonce(now - 5 * s, None, Some(9_012_002), None, now).is_err());
        // Old dendrites: no window at all.
        assert!(check_nonce(now - 60 * s, None, Some(7_001_000), None, now).is_ok());
        assert!(check_nonce(now - 60 * s, None, None, None, now).is_ok());
        // Known key: strictly newer, no age check.
        assert_eq!(
            check_nonce(5, Some(5), Some(9_012_002), Some(9.0), now),
            Err(NonceError::NotNewer)
        );
        assert!(check_nonce(6, Some(5), Some(9_012_002), Some(9.0), now).is_ok());
        // The unsigned timeout header cannot widen the window past the cap.
        assert!(check_nonce(now - 100 * s, None, Some(9_012_002), Some(1e9), now).is_err());
    }

    #[test]
    fn tracker_records_and_stays_bounded() {
        let t = NonceTracker::new(4);
        let mut h = RequestHeaders {
            dendrite_version: Some(9_012_002),
            timeout: Some(9.0),
            ..Default::default()
        };
        let now = now_ns();
        for i in 0..10 {
            h.dendrite_nonce = Some(now + i);
            t.check_and_record(&format!("k{i}"), &h, now).unwrap();
            assert!(t.len() <= 4);
        }
        h.dendrite_nonce = Some(now + 9);
        assert_eq!(t.check_and_record("k9", &h, now), Err(NonceError::NotNewer));
        h.dendrite_nonce = None;
        assert_eq!(t.check("k9", &h, now), Err(NonceError::Missing));
    }

    #[test]
    fn headers_parse_like_python() {
        let mut m = HeaderMap::new();
        m.insert("bt_header_dendrite_nonce", "0123".parse().unwrap());
        m.insert("BT_HEADER_DENDRITE_VERSION", "9012002".parse().unwrap());
        m.insert("timeout", "9.0".parse().unwrap());
        m.insert("header_size", "464".parse().unwrap());
        let h = RequestHeaders::parse(&m).unwrap();
        assert_eq!(h.dendrite_nonce, Some(123));
        assert_eq!(h.dendrite_version, Some(9_012_002));
        assert_eq!(h.timeout, Some(9.0));
        assert_eq!(h.echoed("header_size"), Some("464"));
        m.insert("bt_header_dendrite_nonce", "12x".parse().unwrap());
        assert!(RequestHeaders::parse(&m).is_err());
    }

    #[test]
    fn uuid4_shape() {
        let u = messages::uuid4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }
}
