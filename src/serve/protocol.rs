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
    /// Older than the newest accepted nonce of this key and outside the window (or below what
    /// the tracker still remembers).
    NotNewer,
    /// Exactly a nonce already accepted for this key: a replay.
    Replay,
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
            // bittensor answers a replay with the same text.
            NonceError::NotNewer | NonceError::Replay => {
                write!(f, "Nonce is too old, a newer one was last processed")
            }
        }
    }
}

impl NonceError {
    /// Metric and log label.
    pub fn reason(&self) -> &'static str {
        match self {
            NonceError::Missing => "missing_nonce",
            NonceError::TooOld { .. } | NonceError::NotNewer => "stale_nonce",
            NonceError::Replay => "replayed_nonce",
        }
    }
}

/// How an accepted nonce relates to what the key sent before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceOk {
    /// Newer than every nonce accepted for the key (or the key's first): bittensor accepts it.
    Newer,
    /// Older than the newest accepted but new and inside the window: a dendrite's concurrent
    /// sends arriving out of order, which bittensor refuses and sv72 accepts.
    Reordered,
}

/// What the tracker remembers of one `hotkey:uuid`.
#[derive(Debug, Clone, Default)]
pub struct KeyNonces {
    /// Newest accepted nonce.
    newest: i128,
    /// Every nonce at or below this is refused: the largest nonce forgotten so far.
    floor: i128,
    /// Accepted nonces still inside the window (so a replay of any of them is caught).
    seen: std::collections::BTreeSet<i128>,
}

/// Nonces remembered per key at most; beyond it the oldest are forgotten (and refused).
pub const MAX_NONCES_PER_KEY: usize = 1 << 16;

/// The nonce window in ns for a request: 4 s + its `timeout` header (capped), as bittensor.
pub fn nonce_window_ns(timeout_s: Option<f64>) -> i128 {
    let t = timeout_s
        .filter(|t| t.is_finite())
        .unwrap_or(0.0)
        .clamp(0.0, MAX_TIMEOUT_FOR_WINDOW_S);
    NONCE_BASE_WINDOW_NS + (t * 1e9) as i128
}

/// Accepted nonces per `hotkey:uuid`, checked and recorded under one lock.
///
/// The rule, next to bittensor's `default_verify` (9.12.2 and 10.x):
///
/// | | bittensor | sv72 |
/// |---|---|---|
/// | first request of a key (dendrite ≥ 7.2.0) | nonce > now − (4 s + `timeout`) | same; `timeout` capped at 60 s |
/// | later requests | nonce > last accepted | nonce > newest accepted, **or** (dendrite ≥ 7.2.0) a nonce inside that window not accepted before |
/// | exact replay | refused (not newer) | refused (every accepted nonce inside the window is remembered) |
/// | dendrite < 7.2.0 or no version | nonce > last accepted | same |
/// | memory | one nonce per key, never freed | bounded: keys and nonces per key |
///
/// So one dendrite's concurrent sends that arrive out of order all pass, and any replay is still
/// refused: a nonce older than the window fails the window, one inside it is remembered. Keys
/// come only from blacklist-approved hotkeys with a valid signature, so the map stays small; at
/// `capacity` keys the ones idle past the widest window go first, then the older half.
pub struct NonceTracker {
    keys: Mutex<HashMap<String, KeyNonces>>,
    capacity: usize,
}

impl NonceTracker {
    /// A tracker holding at most `capacity` keys.
    pub fn new(capacity: usize) -> Self {
        Self {
            keys: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// The key the Python axon uses.
    pub fn key(hotkey: &str, uuid: Option<&str>) -> String {
        format!("{hotkey}:{}", uuid.unwrap_or("None"))
    }

    /// Applies the rules without recording anything (the cheap check before the signature).
    pub fn check(
        &self,
        key: &str,
        h: &RequestHeaders,
        now_ns: i128,
    ) -> Result<NonceOk, NonceError> {
        let nonce = h.dendrite_nonce.ok_or(NonceError::Missing)?;
        let keys = self.lock();
        check_nonce(nonce, keys.get(key), h.dendrite_version, h.timeout, now_ns)
    }

    /// Checks and records in one step, so of two concurrent copies of a request exactly one
    /// passes, and concurrent distinct nonces of one key never refuse each other.
    pub fn check_and_record(
        &self,
        key: &str,
        h: &RequestHeaders,
        now_ns: i128,
    ) -> Result<NonceOk, NonceError> {
        let nonce = h.dendrite_nonce.ok_or(NonceError::Missing)?;
        let mut keys = self.lock();
        let ok = check_nonce(nonce, keys.get(key), h.dendrite_version, h.timeout, now_ns)?;
        if !keys.contains_key(key) && keys.len() >= self.capacity {
            evict(&mut keys, now_ns);
        }
        let k = keys.entry(key.to_string()).or_insert_with(|| KeyNonces {
            newest: nonce,
            floor: i128::MIN,
            seen: Default::default(),
        });
        k.newest = k.newest.max(nonce);
        k.seen.insert(nonce);
        // Forget what no window can accept any more; the floor keeps refusing it.
        let cutoff = now_ns - nonce_window_ns(h.timeout);
        while let Some(&first) = k.seen.first() {
            if first > cutoff && k.seen.len() <= MAX_NONCES_PER_KEY {
                break;
            }
            k.seen.pop_first();
            k.floor = k.floor.max(first);
        }
        Ok(ok)
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, KeyNonces>> {
        // A poisoned map is still a valid map of nonces.
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Drops keys whose newest nonce is older than the widest window (a replay of them fails the
/// first-request window anyway), then, if that freed nothing, the older half.
fn evict(keys: &mut HashMap<String, KeyNonces>, now_ns: i128) {
    let widest = now_ns - nonce_window_ns(Some(MAX_TIMEOUT_FOR_WINDOW_S));
    let before = keys.len();
    keys.retain(|_, k| k.newest > widest);
    if keys.len() == before {
        let mut all: Vec<i128> = keys.values().map(|k| k.newest).collect();
        all.sort_unstable();
        let cut = all[all.len() / 2];
        keys.retain(|_, k| k.newest > cut);
    }
}

/// The nonce rule (see [`NonceTracker`]): bittensor's `default_verify`, plus new nonces inside
/// the window accepted out of order.
pub fn check_nonce(
    nonce: i128,
    known: Option<&KeyNonces>,
    version: Option<i128>,
    timeout_s: Option<f64>,
    now_ns: i128,
) -> Result<NonceOk, NonceError> {
    let windowed = version.is_some_and(|v| v >= V_7_2_0);
    let window_ns = nonce_window_ns(timeout_s);
    let inside = nonce > now_ns - window_ns;
    let Some(k) = known else {
        if windowed && !inside {
            return Err(NonceError::TooOld {
                allowed_s: window_ns as f64 / 1e9,
                age_s: (now_ns - nonce) as f64 / 1e9,
            });
        }
        return Ok(NonceOk::Newer);
    };
    if nonce == k.newest || k.seen.contains(&nonce) {
        return Err(NonceError::Replay);
    }
    if nonce > k.newest {
        return Ok(NonceOk::Newer);
    }
    if windowed && inside && nonce > k.floor {
        return Ok(NonceOk::Reordered);
    }
    Err(NonceError::NotNewer)
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

    const V: Option<i128> = Some(9_012_002);
    const S: i128 = 1_000_000_000;

    fn headers(nonce: i128) -> RequestHeaders {
        RequestHeaders {
            dendrite_nonce: Some(nonce),
            dendrite_version: V,
            timeout: Some(9.0),
            ..Default::default()
        }
    }

    #[test]
    fn nonce_window_first_request() {
        let now: i128 = 1_000_000_000_000_000_000;
        // 9 s timeout: up to 13 s old accepted on the first request.
        assert!(check_nonce(now - 12 * S, None, V, Some(9.0), now).is_ok());
        let e = check_nonce(now - 14 * S, None, V, Some(9.0), now).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Nonce is too old: acceptable delta is 13.00 seconds but request was 14.00 seconds old"
        );
        // No timeout header: 4 s window.
        assert!(check_nonce(now - 5 * S, None, V, None, now).is_err());
        // Old dendrites: no window at all.
        assert!(check_nonce(now - 60 * S, None, Some(7_001_000), None, now).is_ok());
        assert!(check_nonce(now - 60 * S, None, None, None, now).is_ok());
        // The unsigned timeout header cannot widen the window past the cap.
        assert!(check_nonce(now - 100 * S, None, V, Some(1e9), now).is_err());
    }

    #[test]
    fn reordered_nonces_pass_and_replays_fail() {
        let t = NonceTracker::new(16);
        let now = now_ns();
        let rec = |n: i128| t.check_and_record("k", &headers(n), now);
        assert_eq!(rec(now - 2 * S), Ok(NonceOk::Newer));
        assert_eq!(rec(now), Ok(NonceOk::Newer));
        // Sent before the newest, arrived after it: accepted (bittensor refuses it).
        assert_eq!(rec(now - S), Ok(NonceOk::Reordered));
        // Every accepted nonce replayed: refused, newest or not.
        for n in [now - 2 * S, now - S, now] {
            assert_eq!(rec(n), Err(NonceError::Replay), "{n}");
        }
        // Older than the window: refused even though never seen.
        assert_eq!(rec(now - 20 * S), Err(NonceError::NotNewer));
        assert_eq!(
            NonceError::Replay.to_string(),
            "Nonce is too old, a newer one was last processed"
        );
        // Without the window (old dendrite), only strictly newer nonces pass, as in bittensor.
        let mut h = headers(now - S / 2);
        h.dendrite_version = Some(7_001_000);
        assert_eq!(t.check_and_record("k", &h, now), Err(NonceError::NotNewer));
        h.dendrite_nonce = Some(now + 1);
        assert_eq!(t.check_and_record("k", &h, now), Ok(NonceOk::Newer));
        h.dendrite_nonce = None;
        assert_eq!(t.check("k", &h, now), Err(NonceError::Missing));
    }

    #[test]
    fn forgotten_nonces_stay_refused() {
        let t = NonceTracker::new(16);
        let now = now_ns();
        let old = now - 10 * S;
        t.check_and_record("k", &headers(old), now).unwrap();
        // 20 s later the first nonce is pruned from memory; the floor still refuses it even
        // with a timeout header (unsigned) widened to the 60 s cap.
        let later = now + 10 * S;
        t.check_and_record("k", &headers(later), later).unwrap();
        let mut h = headers(old);
        h.timeout = Some(60.0);
        assert_eq!(
            t.check_and_record("k", &h, later),
            Err(NonceError::NotNewer)
        );
        // A nonce above the floor was never accepted, so it is no replay: the widened window
        // (bittensor's rule for first requests too) lets it in.
        h.dendrite_nonce = Some(old + 1);
        assert_eq!(t.check_and_record("k", &h, later), Ok(NonceOk::Reordered));
    }

    /// 8 threads record 4,000 nonces of one key in shuffled order, each nonce twice: every
    /// nonce passes exactly once.
    #[test]
    fn concurrent_reorders_and_replays() {
        let t = std::sync::Arc::new(NonceTracker::new(16));
        let now = now_ns();
        let n = 4000i128;
        let mut nonces: Vec<i128> = (0..n)
            .flat_map(|i| [now - i * 1000, now - i * 1000])
            .collect();
        // A fixed shuffle (xorshift) so the order is reproducible.
        let mut x = 0x9e3779b97f4a7c15u64;
        for i in (1..nonces.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            nonces.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let chunks: Vec<Vec<i128>> = nonces
            .chunks(nonces.len() / 8)
            .map(|c| c.to_vec())
            .collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|c| {
                let t = t.clone();
                std::thread::spawn(move || {
                    let (mut ok, mut replay) = (0, 0);
                    for nonce in c {
                        match t.check_and_record("k", &headers(nonce), now) {
                            Ok(_) => ok += 1,
                            Err(NonceError::Replay) => replay += 1,
                            Err(e) => panic!("{nonce}: {e:?}"),
                        }
                    }
                    (ok, replay)
                })
            })
            .collect();
        let (ok, replay) = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        assert_eq!((ok, replay), (n, n));
    }

    #[test]
    fn tracker_stays_bounded() {
        let t = NonceTracker::new(4);
        let now = now_ns();
        for i in 0..10 {
            t.check_and_record(&format!("k{i}"), &headers(now + i), now)
                .unwrap();
            assert!(t.len() <= 4);
        }
        assert_eq!(
            t.check_and_record("k9", &headers(now + 9), now),
            Err(NonceError::Replay)
        );
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
