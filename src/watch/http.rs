//! `watch --listen`: the HTTP endpoints over the loop's record. Owns the server (axum on a
//! current-thread tokio runtime of its own, on its own thread, so the loop stays synchronous)
//! and the routes:
//!
//! - `GET /healthz`: `200 ok`, as long as the server runs (a liveness probe: restarting the
//!   loop cannot fix a checkout that cannot follow its branch or a refused service, so those
//!   are metrics, `stackctl_checkout_up_to_date` and `stackctl_refused_services`);
//! - `GET /status`: the [`WatchState`] as JSON, `{"format_version": "1.1", ...}` with the
//!   record's fields beside the version; minor versions only add fields;
//! - `GET /metrics`: [`metrics::render`], Prometheus' text format 0.0.4;
//! - any other path: `404`.
//!
//! A request holds the state's mutex only to clone the record, never across an `.await`, and a
//! mutex poisoned by a panicking writer still serves what it holds.

use crate::watch::metrics;
use crate::watch::state::WatchState;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::watch;

/// The version of the `/status` JSON; minor versions only add fields.
pub const STATUS_FORMAT_VERSION: &str = "1.1";

/// How long a shutdown waits for requests in flight before it cuts their connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The record the loop shares with the server.
type Shared = Arc<Mutex<WatchState>>;

/// The running HTTP endpoints; dropping it (or [`Server::shutdown`]) stops the server.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `addr` at once, so "address in use" is an immediate error naming the address,
    /// and serves on a background thread with its own current-thread tokio runtime.
    pub fn start(addr: SocketAddr, state: Arc<Mutex<WatchState>>) -> std::io::Result<Server> {
        let named = |what: &str, e: std::io::Error| {
            std::io::Error::new(e.kind(), format!("{what} {addr}: {e}"))
        };
        let std_listener =
            std::net::TcpListener::bind(addr).map_err(|e| named("cannot listen on", e))?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| named("cannot set up the listener on", e))?;
        let bound = std_listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let listener = {
            // Registering the socket with the runtime's reactor needs the runtime entered.
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener)
                .map_err(|e| named("cannot set up the listener on", e))?
        };
        let (stop, mut stopped) = watch::channel(false);
        let mut graceful = stopped.clone();
        let app = router(state);
        let thread = std::thread::Builder::new()
            .name(format!("http {bound}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                        // A change or a dropped sender: either way, time to stop.
                        let _ = graceful.changed().await;
                    });
                    let serving = tokio::spawn(std::future::IntoFuture::into_future(serve));
                    let _ = stopped.changed().await;
                    match tokio::time::timeout(SHUTDOWN_GRACE, serving).await {
                        Ok(Ok(Ok(()))) => {}
                        Ok(Ok(Err(e))) => tracing::warn!("HTTP server on {bound}: {e}"),
                        Ok(Err(e)) => tracing::warn!("HTTP server on {bound} failed: {e}"),
                        Err(_) => tracing::debug!(
                            "HTTP server on {bound}: requests still in flight after {SHUTDOWN_GRACE:?}, cut"
                        ),
                    }
                });
                // Dropping the runtime here cancels whatever connection task is left.
            })?;
        tracing::info!("serving /healthz, /status and /metrics on http://{bound}");
        Ok(Server {
            addr: bound,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and joins the thread.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("the HTTP server's thread on {} panicked", self.addr);
        }
    }
}

/// The routes over the shared record.
fn router(state: Shared) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/status", get(status))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .with_state(state)
}

/// A copy of the record; the lock is held for the clone only. A writer that panicked while
/// holding it left a record that is still worth showing.
fn snapshot(state: &Mutex<WatchState>) -> WatchState {
    state.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// `/status`: the version beside the record's own fields.
#[derive(Serialize)]
struct StatusDocument {
    format_version: &'static str,
    #[serde(flatten)]
    state: WatchState,
}

async fn status(State(state): State<Shared>) -> axum::Json<StatusDocument> {
    axum::Json(StatusDocument {
        format_version: STATUS_FORMAT_VERSION,
        state: snapshot(&state),
    })
}

async fn metrics_text(State(state): State<Shared>) -> impl IntoResponse {
    let text = metrics::render(&snapshot(&state));
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text)
}

async fn not_found() -> (StatusCode, &'static str) {
    (
        StatusCode::NOT_FOUND,
        "not found; try /healthz, /status or /metrics\n",
    )
}
