//! The axon's server side: the runtime, listening, the accept loop with its connection limits,
//! the metagraph watcher, signals and graceful shutdown. Requests go to `pipeline`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;

use super::conn::{raise_fd_limit, CloseReason, Registry, Tracked};
use super::image::ImageLanes;
use super::metrics::{log_event, Metrics};
use super::options::ServeOptions;
use super::pipeline::{handle, State};
use super::predlog::PredictionLog;
use super::protocol::NonceTracker;
use super::ratelog::RateLog;
use super::telemetry::{Batcher, ModelSlot};
use crate::chain::MetagraphHandle;
use crate::infer::BatchOptions;

/// Pending connections the kernel queues for the accept loop (capped by `net.core.somaxconn`);
/// large so that a connection flood does not make a validator's SYN wait for a retransmit.
const LISTEN_BACKLOG: u32 = 4096;
/// File descriptors kept free beside the connections (log files, the model, the metagraph).
const SPARE_FDS: u64 = 128;

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
        let threads = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(2, 8);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .thread_name("sv72-axon-io")
            .build()
            .context("cannot start the tokio runtime")?;
        let listener = rt
            .block_on(listen(opts.addr))
            .with_context(|| format!("cannot listen on {} (serve.host/serve.port)", opts.addr))?;
        let addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let plog = match &opts.prediction_log {
            Some(p) => Some(PredictionLog::open(p, opts.low_confidence_cap_bytes)?),
            None => None,
        };
        let metrics = slot.telemetry();
        let thread = std::thread::Builder::new()
            .name("sv72-axon".into())
            .spawn(move || rt.block_on(run(listener, opts, metagraph, slot, plog, stop_rx)))
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

async fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std's TcpListener::bind: a restart must not wait for TIME_WAIT sockets.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// `max_connections`, lowered to what the open-file limit allows (logged).
fn connection_cap(wanted: usize) -> usize {
    let Some(soft) = raise_fd_limit() else {
        return wanted;
    };
    let fit = soft.saturating_sub(SPARE_FDS).max(16) as usize;
    if fit < wanted {
        log_event(
            "warn",
            "fd_limit_low",
            json!({"open_files_limit": soft, "max_connections": wanted, "using": fit,
                   "fix": format!("raise the limit: `ulimit -n {}` (or LimitNOFILE= in the systemd unit)",
                                  wanted as u64 + SPARE_FDS)}),
        );
        return fit;
    }
    wanted
}

async fn run(
    listener: tokio::net::TcpListener,
    opts: ServeOptions,
    metagraph: Arc<MetagraphHandle>,
    slot: Arc<ModelSlot>,
    plog: Option<PredictionLog>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let metrics = slot.telemetry();
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
    let mut limits = opts.connections.clone();
    limits.max_connections = connection_cap(limits.max_connections);
    let registry = Registry::new(limits.clone(), metrics.clone());
    let state = Arc::new(State {
        nonces: NonceTracker::new(opts.max_nonce_keys),
        opts: opts.clone(),
        metagraph: metagraph.clone(),
        batcher: batcher.clone(),
        slot,
        metrics: metrics.clone(),
        plog,
        images: ImageLanes::new(opts.images.clone()),
        events: RateLog::new(opts.rejection_log_per_s),
    });
    log_event(
        "info",
        "serve_started",
        json!({"addr": listener.local_addr()?.to_string(), "hotkey": opts.axon_hotkey,
               "model": state.slot.version(), "max_connections": limits.max_connections,
               "max_connections_per_ip": limits.max_per_ip}),
    );
    spawn_metagraph_watcher(metagraph, opts.metagraph_poll, stop.clone());
    let mut signal_stop = stop.clone();
    if opts.handle_signals {
        signal_stop = spawn_signal_handler(stop.clone());
    }

    let mut http = hyper::server::conn::http1::Builder::new();
    // Head and idle timeouts are the connection watchdog's (see `conn`).
    http.timer(TokioTimer::new())
        .header_read_timeout(None)
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
                // Out of file descriptors: make room by shedding, and back off, never spin.
                let shed = registry.shed_one();
                state.events.log(
                    "error",
                    "accept_failed",
                    "accept_failed",
                    json!({"error": e.to_string(), "shed": shed.map(|c| c.peer.to_string())}),
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let admission = registry.admit(peer);
        if let Some(v) = &admission.shed {
            connection_event(&state, CloseReason::Shed, v.peer);
        }
        let slot = match admission.slot {
            Ok(s) => s,
            Err(reason) => {
                connection_event(&state, reason, peer);
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let registry = registry.clone();
        let http = http.clone();
        let limits = limits.clone();
        let mut conn_stop = conn_stop_rx.clone();
        tasks.spawn(async move {
            let conn = slot.conn.clone();
            let (svc_state, svc_conn) = (state.clone(), conn.clone());
            let svc = hyper::service::service_fn(move |req| {
                let (state, conn) = (svc_state.clone(), svc_conn.clone());
                async move {
                    conn.request_started();
                    let r = handle(state, conn.clone(), req).await;
                    conn.request_finished();
                    Ok::<_, Infallible>(r)
                }
            });
            let io = TokioIo::new(Tracked::new(stream, conn.clone()));
            let served = http.serve_connection(io, svc);
            tokio::pin!(served);
            let closed = tokio::select! {
                _ = served.as_mut() => None,
                why = conn.watchdog(&limits) => Some(why),
                _ = conn_stop.changed() => {
                    served.as_mut().graceful_shutdown();
                    let _ = served.await;
                    None
                }
            };
            match closed {
                // Counted by the registry when it chose the victim.
                Some(CloseReason::Shed) | None => {}
                Some(why) => {
                    registry.count(why);
                    if why == CloseReason::HeaderTimeout {
                        connection_event(&state, why, conn.peer);
                    }
                }
            }
            drop(slot);
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

/// A connection refused, shed or timed out by the server, logged (rate-limited).
fn connection_event(state: &State, reason: CloseReason, peer: SocketAddr) {
    state.events.log(
        "warn",
        "connection_refused",
        reason.label(),
        json!({"peer": peer.to_string()}),
    );
}

fn spawn_metagraph_watcher(
    mg: Arc<MetagraphHandle>,
    poll: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = stop.changed() => return,
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
}

/// Stops on SIGINT/SIGTERM (or when `outer` fires); returns the receiver that says so.
fn spawn_signal_handler(
    mut outer: tokio::sync::watch::Receiver<bool>,
) -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
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
    rx
}
