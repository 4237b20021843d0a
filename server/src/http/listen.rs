//! The accept loop: HTTP/1.1 connections with a header deadline (which also closes
//! idle keep-alive connections), a cap on connections per client address, and a
//! graceful shutdown that stops accepting, lets in-flight requests finish for a bounded
//! time and then cuts the rest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// How connections are served.
#[derive(Debug, Clone, Copy)]
pub struct ListenLimits {
    /// Time to send a request's headers (and the idle time of a keep-alive connection).
    pub header_timeout: Duration,
    /// Open connections per client address.
    pub per_address: usize,
    /// Time in-flight requests get after a shutdown signal.
    pub grace: Duration,
}

/// Open connections per client address.
#[derive(Default)]
struct OpenConnections(Mutex<HashMap<IpAddr, usize>>);

impl OpenConnections {
    /// Counts a new connection from `ip` unless it already has `max`.
    fn try_open(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<ConnectionSlot> {
        let mut map = self.0.lock().ok()?;
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ConnectionSlot {
            table: self.clone(),
            ip,
        })
    }
}

/// One counted connection; uncounted when dropped.
struct ConnectionSlot {
    table: Arc<OpenConnections>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Ok(mut map) = self.table.0.lock()
            && let Some(n) = map.get_mut(&self.ip)
        {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes; then waits up to
/// `limits.grace` for open connections to finish their requests. Returns whether
/// every connection finished within the grace time.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ListenLimits,
    shutdown: impl std::future::Future<Output = ()>,
) -> bool {
    let open = Arc::new(OpenConnections::default());
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // Headers over the configured limit are answered (431, JSON) by the gate;
        // hyper's own refusal only applies to far larger ones.
        .max_buf_size(1 << 20)
        .max_headers(1000);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = open.try_open(peer.ip(), limits.per_address) else {
            tracing::warn!(
                client = %peer.ip(),
                open = limits.per_address,
                "refused a connection: the client has too many open"
            );
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // Handlers that need the client's address (the console's sign-in limit) find
        // it as `ConnectInfo`.
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            app.clone(),
            move |mut r: axum::http::Request<hyper::body::Incoming>| {
                r.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                r
            },
        ));
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            let _slot = slot;
            // A connection's errors (client gone, header deadline) are the client's.
            let _ = watched.await;
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => true,
        () = tokio::time::sleep(limits.grace) => false,
    }
}

/// Completes on the first SIGINT or SIGTERM (and logs it); a second signal exits at
/// once without waiting for the grace time.
pub fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!(
            signal = name,
            "no new connections; finishing requests in flight"
        );
        tokio::spawn(async move {
            tokio::select! {
                _ = interrupt.recv() => {},
                _ = terminate.recv() => {},
            }
            tracing::warn!("second signal: exiting now");
            std::process::exit(130);
        });
    })
}
