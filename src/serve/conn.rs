//! Connection management: a per-source cap, head and idle timeouts, and shedding at capacity.
//!
//! Every open connection is in the [`Registry`] with its phase. At the global cap a new
//! connection takes the place of the one that matters least: an idle or still head-less
//! connection that never carried a verified request, oldest first, then an idle verified one.
//! Connections in the middle of a request are never shed, so a validator's query in progress is
//! never cut, and a validator that connects while an attacker holds every slot still gets in.
//!
//! Timeouts are enforced by a watchdog beside each connection rather than by hyper's
//! `header_read_timeout`, which counts keep-alive idle time as head time and so cannot be both
//! short for slow heads and above aiohttp's 15 s pool idle time.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use super::metrics::Metrics;
use super::options::ConnLimits;

/// The address a per-source cap counts: the IPv4 address, or the /64 of an IPv6 one (a
/// single host usually owns a whole /64). IPv4-mapped IPv6 addresses count as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(u128);

impl Source {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Source(u32::from(v4) as u128),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(u32::from(v4) as u128),
                None => Source((u128::from(v6) >> 64 << 64) | 1 << 32),
            },
        }
    }
}

const FRESH: u8 = 0;
const BUSY: u8 = 1;
const IDLE: u8 = 2;

/// Why a connection was refused or closed early (metric and log labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Refused: its source already has `max_connections_per_ip` open.
    PerIpLimit,
    /// Refused: at `max_connections` with every connection in a request.
    Full,
    /// Closed to make room for a new connection.
    Shed,
    /// Its head did not arrive whole within `header_timeout`.
    HeaderTimeout,
    /// Idle past `idle_timeout`.
    IdleTimeout,
}

impl CloseReason {
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::PerIpLimit => "per_ip_limit",
            CloseReason::Full => "connections_full",
            CloseReason::Shed => "shed",
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
        }
    }
}

/// One open connection as the registry and its watchdog see it.
pub struct Conn {
    id: u64,
    pub peer: SocketAddr,
    source: Source,
    clock: Instant,
    opened_ms: u64,
    phase: AtomicU8,
    /// When the phase began, in ms since `clock`.
    since_ms: AtomicU64,
    /// First byte of a pending head, ms since `clock` + 1 (0: none yet).
    head_ms: AtomicU64,
    /// A request on this connection passed signature and nonce checks.
    verified: AtomicBool,
    shed: AtomicBool,
    kill: Notify,
}

impl Conn {
    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// A request head arrived whole: the service runs.
    pub fn request_started(&self) {
        self.phase.store(BUSY, Ordering::Release);
        self.since_ms.store(self.now_ms(), Ordering::Release);
        self.head_ms.store(0, Ordering::Release);
    }

    /// The service answered; the connection idles until the next head.
    pub fn request_finished(&self) {
        self.since_ms.store(self.now_ms(), Ordering::Release);
        self.phase.store(IDLE, Ordering::Release);
    }

    /// Marks the connection as carrying a verified validator, which protects it from shedding.
    pub fn mark_verified(&self) {
        self.verified.store(true, Ordering::Relaxed);
    }

    fn bytes_read(&self) {
        if self.phase.load(Ordering::Acquire) != BUSY && self.head_ms.load(Ordering::Acquire) == 0 {
            self.head_ms.store(self.now_ms() + 1, Ordering::Release);
        }
    }

    /// When the watchdog must look again, and what closes the connection then.
    fn deadline(&self, limits: &ConnLimits) -> Option<(u64, CloseReason)> {
        let head = limits.header_timeout.as_millis() as u64;
        match self.phase.load(Ordering::Acquire) {
            FRESH => Some((self.opened_ms + head, CloseReason::HeaderTimeout)),
            IDLE => match self.head_ms.load(Ordering::Acquire) {
                0 => Some((
                    self.since_ms.load(Ordering::Acquire) + limits.idle_timeout.as_millis() as u64,
                    CloseReason::IdleTimeout,
                )),
                h => Some((h - 1 + head, CloseReason::HeaderTimeout)),
            },
            // The request pipeline bounds itself (body timeout, answer deadline).
            _ => None,
        }
    }

    /// Resolves when the connection must close: shed, or a timeout passed.
    pub async fn watchdog(&self, limits: &ConnLimits) -> CloseReason {
        loop {
            if self.shed.load(Ordering::Acquire) {
                return CloseReason::Shed;
            }
            let wait = match self.deadline(limits) {
                Some((at, reason)) => {
                    let now = self.now_ms();
                    if now >= at {
                        return reason;
                    }
                    Duration::from_millis(at - now)
                }
                // Busy: look again in a while (the phase changes without waking us).
                None => Duration::from_millis(250),
            };
            tokio::select! {
                _ = self.kill.notified() => return CloseReason::Shed,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

struct Inner {
    conns: HashMap<u64, Arc<Conn>>,
    per_source: HashMap<Source, usize>,
    next_id: u64,
}

/// All open connections.
pub struct Registry {
    inner: Mutex<Inner>,
    limits: ConnLimits,
    clock: Instant,
    metrics: Arc<Metrics>,
}

/// Removes its connection from the registry when the connection task ends.
pub struct Slot {
    registry: Arc<Registry>,
    pub conn: Arc<Conn>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry.remove(&self.conn);
    }
}

/// A connection the registry refused, with the one it shed to make room, if any.
pub struct Admission {
    pub slot: Result<Slot, CloseReason>,
    pub shed: Option<Arc<Conn>>,
}

impl Registry {
    pub fn new(limits: ConnLimits, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                conns: HashMap::new(),
                per_source: HashMap::new(),
                next_id: 0,
            }),
            limits,
            clock: Instant::now(),
            metrics,
        })
    }

    pub fn limits(&self) -> &ConnLimits {
        &self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of open connections.
    pub fn len(&self) -> usize {
        self.lock().conns.len()
    }

    /// True when no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Admits a new connection from `peer`, shedding another at the global cap.
    pub fn admit(self: &Arc<Self>, peer: SocketAddr) -> Admission {
        let source = Source::of(peer.ip());
        let mut g = self.lock();
        if g.per_source.get(&source).copied().unwrap_or(0) >= self.limits.max_per_ip {
            self.count(CloseReason::PerIpLimit);
            return Admission {
                slot: Err(CloseReason::PerIpLimit),
                shed: None,
            };
        }
        let mut shed = None;
        if g.conns.len() >= self.limits.max_connections {
            match victim(&g.conns) {
                Some(v) => {
                    take_out(&mut g, &v);
                    self.count(CloseReason::Shed);
                    shed = Some(v);
                }
                None => {
                    self.count(CloseReason::Full);
                    return Admission {
                        slot: Err(CloseReason::Full),
                        shed: None,
                    };
                }
            }
        }
        g.next_id += 1;
        let now = self.clock.elapsed().as_millis() as u64;
        let conn = Arc::new(Conn {
            id: g.next_id,
            peer,
            source,
            clock: self.clock,
            opened_ms: now,
            phase: AtomicU8::new(FRESH),
            since_ms: AtomicU64::new(now),
            head_ms: AtomicU64::new(0),
            verified: AtomicBool::new(false),
            shed: AtomicBool::new(false),
            kill: Notify::new(),
        });
        g.conns.insert(conn.id, conn.clone());
        *g.per_source.entry(source).or_default() += 1;
        self.metrics
            .open_connections
            .store(g.conns.len() as u64, Ordering::Relaxed);
        self.metrics.connections.inc(&["accepted"]);
        Admission {
            slot: Ok(Slot {
                registry: self.clone(),
                conn,
            }),
            shed,
        }
    }

    /// Closes the connection that matters least (out of file descriptors), if one can go.
    pub fn shed_one(&self) -> Option<Arc<Conn>> {
        let mut g = self.lock();
        let v = victim(&g.conns)?;
        take_out(&mut g, &v);
        self.count(CloseReason::Shed);
        Some(v)
    }

    fn remove(&self, conn: &Conn) {
        let mut g = self.lock();
        // A shed connection is already gone (ids are never reused).
        drop_entry(&mut g, conn);
        self.metrics
            .open_connections
            .store(g.conns.len() as u64, Ordering::Relaxed);
    }

    /// Counts a refusal (`sv72_connections_total`) or an early close
    /// (`sv72_connections_closed_total`).
    pub fn count(&self, reason: CloseReason) {
        match reason {
            CloseReason::PerIpLimit | CloseReason::Full => {
                self.metrics.connections.inc(&[reason.label()])
            }
            _ => self.metrics.connections_closed.inc(&[reason.label()]),
        }
    }
}

/// Takes the victim out of the registry and wakes its watchdog.
fn take_out(g: &mut Inner, v: &Conn) {
    drop_entry(g, v);
    v.shed.store(true, Ordering::Release);
    v.kill.notify_one();
}

fn drop_entry(g: &mut Inner, c: &Conn) {
    if g.conns.remove(&c.id).is_some() {
        if let Some(n) = g.per_source.get_mut(&c.source) {
            *n -= 1;
            if *n == 0 {
                g.per_source.remove(&c.source);
            }
        }
    }
}

/// The connection to shed: not in a request; never verified before verified; oldest phase
/// first. A linear scan: it runs only at the cap, over at most `max_connections` entries.
fn victim(conns: &HashMap<u64, Arc<Conn>>) -> Option<Arc<Conn>> {
    conns
        .values()
        .filter(|c| c.phase.load(Ordering::Acquire) != BUSY)
        .min_by_key(|c| {
            (
                c.verified.load(Ordering::Relaxed),
                c.since_ms.load(Ordering::Acquire),
                c.id,
            )
        })
        .cloned()
}

/// A TCP stream that tells its [`Conn`] when head bytes arrive.
pub struct Tracked<S> {
    inner: S,
    conn: Arc<Conn>,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, conn: Arc<Conn>) -> Self {
        Self { inner, conn }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.bytes_read();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Raises the soft open-file limit to the hard one (as Go's runtime does) and returns the soft
/// limit now in force; `None` where it cannot be read.
pub fn raise_fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return None;
            }
            if lim.rlim_cur < lim.rlim_max {
                let want = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                    lim.rlim_cur = lim.rlim_max;
                }
            }
        }
        // rlim_t is not u64 on every unix.
        #[allow(clippy::unnecessary_cast)]
        Some(lim.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_ip: usize) -> ConnLimits {
        ConnLimits {
            max_connections: max,
            max_per_ip: per_ip,
            header_timeout: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(300),
        }
    }

    fn peer(last: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], port))
    }

    #[test]
    fn per_source_cap_and_release() {
        let r = Registry::new(limits(100, 2), Arc::new(Metrics::new()));
        let a = r.admit(peer(2, 1)).slot.ok().unwrap();
        let _b = r.admit(peer(2, 2)).slot.ok().unwrap();
        assert_eq!(
            r.admit(peer(2, 3)).slot.err(),
            Some(CloseReason::PerIpLimit)
        );
        // Another source is not affected; a closed connection frees its place.
        assert!(r.admit(peer(3, 1)).slot.is_ok());
        drop(a);
        assert!(r.admit(peer(2, 4)).slot.is_ok());
        // IPv6: one /64 is one source.
        let v6 = |s: &str| SocketAddr::new(s.parse().unwrap(), 1);
        let _c = r.admit(v6("2001:db8::1")).slot.ok().unwrap();
        let _d = r.admit(v6("2001:db8::2")).slot.ok().unwrap();
        assert!(r.admit(v6("2001:db8::3")).slot.is_err());
        assert!(r.admit(v6("2001:db8:0:1::3")).slot.is_ok());
    }

    #[test]
    fn at_capacity_sheds_unverified_idle_oldest_first() {
        let r = Registry::new(limits(3, 10), Arc::new(Metrics::new()));
        let old = r.admit(peer(2, 1)).slot.ok().unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let validator = r.admit(peer(3, 1)).slot.ok().unwrap();
        validator.conn.request_started();
        validator.conn.mark_verified();
        validator.conn.request_finished();
        let busy = r.admit(peer(2, 2)).slot.ok().unwrap();
        busy.conn.request_started();
        // Full: the oldest unverified, not-busy one goes, not the verified or the busy one.
        let a = r.admit(peer(4, 1));
        let new = a.slot.ok().unwrap();
        assert_eq!(a.shed.unwrap().peer, old.conn.peer);
        // Next: the new fresh one (unverified) before the verified validator.
        let a = r.admit(peer(4, 2));
        assert_eq!(a.shed.unwrap().peer, new.conn.peer);
        // The newest fresh one goes again; once the others are busy, the verified one goes.
        let a = r.admit(peer(4, 3));
        assert_ne!(a.shed.as_ref().unwrap().peer, validator.conn.peer);
        a.slot.as_ref().ok().unwrap().conn.request_started();
        let a = r.admit(peer(4, 4));
        assert_eq!(a.shed.unwrap().peer, validator.conn.peer);
        assert_eq!(r.metrics.connections_closed.get(&["shed"]), 4);
        assert_eq!(r.metrics.open_connections.load(Ordering::Relaxed), 3);
        drop(a.slot);
        // All busy: refused.
        let r = Registry::new(limits(1, 10), Arc::new(Metrics::new()));
        let b = r.admit(peer(2, 1)).slot.ok().unwrap();
        b.conn.request_started();
        assert_eq!(r.admit(peer(3, 1)).slot.err(), Some(CloseReason::Full));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn watchdog_times_out_heads_and_idles() {
        let r = Registry::new(limits(10, 10), Arc::new(Metrics::new()));
        let l = r.limits().clone();
        let s = r.admit(peer(2, 1)).slot.ok().unwrap();
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(s.conn.watchdog(&l).await, CloseReason::HeaderTimeout);
        s.conn.request_started();
        s.conn.request_finished();
        std::thread::sleep(Duration::from_millis(150));
        // Idle 150 ms < 300 ms: not yet; a head's first byte starts the 100 ms head clock.
        assert!(s.conn.deadline(&l).unwrap().1 == CloseReason::IdleTimeout);
        s.conn.bytes_read();
        assert!(s.conn.deadline(&l).unwrap().1 == CloseReason::HeaderTimeout);
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(s.conn.watchdog(&l).await, CloseReason::HeaderTimeout);
        // A shed connection's watchdog fires at once.
        let v = r.shed_one().unwrap();
        assert_eq!(v.watchdog(&l).await, CloseReason::Shed);
    }
}
