//! Serving an axum app over TLS: rustls with a certificate resolver (so rotation needs no
//! restart), HTTP/1.1 and HTTP/2 by ALPN, keep-alive, and graceful shutdown.
//!
//! Webhooks, probes and metrics share this server, and with `failurePolicy: Fail` every write of
//! an EtcdCluster waits on it: no client may hold it longer than a request takes. A handshake,
//! a request's headers (HTTP/1; also how long a keep-alive connection may sit idle) and a whole
//! request each have a deadline; a connection with no request for [`IDLE_TIMEOUT`] is closed
//! gracefully (HTTP/2 has no idle timeout of its own, and pings keep a silent client alive); at
//! most [`MAX_CONNECTIONS`] are served at once, the rest wait in the listen backlog.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::server::ResolvesServerCert;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/1: the headers of a request must have arrived this long after the connection was ready
/// for them. kube-apiserver sends them at once.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no request in flight for this long is closed (gracefully: HTTP/2 sends
/// GOAWAY, and clients open a new one when they next need it).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// After a graceful close begins, what is in flight gets this long to finish.
const CLOSE_GRACE: Duration = Duration::from_secs(15);
/// HTTP/2 pings find dead peers: one every 20 s, the connection dropped when one goes unanswered
/// for 10 s.
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once. A connection costs its TLS buffers (tens of KiB): the cap keeps
/// a flood of them well inside the operator's memory limit, and is far above what kube-apiserver
/// (a few multiplexed HTTP/2 connections per instance), Prometheus and the kubelet's probes use.
pub const MAX_CONNECTIONS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("cannot build the TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// A TLS 1.2/1.3 server configuration that asks `resolver` for the certificate on every handshake.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `app` on `listener` until `shutdown` resolves. One client's failed handshake or broken
/// connection never stops the server.
pub async fn serve(
    listener: TcpListener,
    resolver: Arc<dyn ResolvesServerCert>,
    app: Router,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let acceptor = TlsAcceptor::from(server_config(resolver)?);
    let builders = Arc::new(Builders::new());
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => return Ok(()),
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return Ok(()),
            },
        };
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let builders = builders.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tcp.set_nodelay(true);
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(err)) => return tracing::debug!(%peer, %err, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let activity = Arc::new(Activity::new());
            let tracked = activity.clone();
            let service = hyper::service::service_fn(move |request| {
                let app = app.clone();
                let tracked = tracked.clone();
                tracked.started();
                async move {
                    let response = app.oneshot(request).await;
                    tracked.ended();
                    response
                }
            });
            let builder = if h2 { &builders.h2 } else { &builders.h1 };
            let connection = builder.serve_connection(TokioIo::new(tls), service);
            tokio::pin!(connection);
            let result = loop {
                tokio::select! {
                    result = connection.as_mut() => break result,
                    () = tokio::time::sleep_until(activity.idle_deadline()) => {
                        if activity.idle_deadline() <= Instant::now() {
                            connection.as_mut().graceful_shutdown();
                            let closing = tokio::time::timeout(CLOSE_GRACE, connection.as_mut());
                            break closing.await.unwrap_or(Ok(()));
                        }
                    }
                }
            };
            if let Err(err) = result {
                tracing::debug!(%peer, %err, "connection ended with an error");
            }
        });
    }
}

/// One builder per protocol, chosen by ALPN: the auto-detecting one would first wait, without a
/// deadline, for the bytes that tell HTTP/1 from HTTP/2.
struct Builders {
    h1: auto::Builder<TokioExecutor>,
    h2: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new() -> Self {
        let mut h1 = auto::Builder::new(TokioExecutor::new()).http1_only();
        h1.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
        let mut h2 = auto::Builder::new(TokioExecutor::new()).http2_only();
        h2.http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(H2_PING_INTERVAL)
            .keep_alive_timeout(H2_PING_TIMEOUT)
            .max_concurrent_streams(64);
        Self { h1, h2 }
    }
}

/// Requests in flight on a connection, and when the last one ended.
struct Activity {
    origin: Instant,
    in_flight: AtomicUsize,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self { origin: Instant::now(), in_flight: AtomicUsize::new(0), last_ms: AtomicU64::new(0) }
    }

    fn started(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
    }

    fn ended(&self) {
        let elapsed = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(elapsed, Ordering::SeqCst);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// When the connection counts as idle, if nothing happens before.
    fn idle_deadline(&self) -> Instant {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return Instant::now() + IDLE_TIMEOUT;
        }
        self.origin + Duration::from_millis(self.last_ms.load(Ordering::SeqCst)) + IDLE_TIMEOUT
    }
}
