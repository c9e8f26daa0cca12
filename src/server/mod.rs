//! The one HTTPS service: admission routes, `/healthz` and `/readyz` on one port, `/metrics` on
//! a port of its own, both served over rustls with a certificate that can be swapped in memory.

pub mod health;
pub mod metrics;
pub mod subject_access;
pub mod tls_listener;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub use health::Readiness;
pub use metrics::Metrics;
pub use tls_listener::{Error, serve};

/// A request, its body read and its answer written, takes at most this long: kube-apiserver
/// waits at most 30 s for a webhook (ours ask for 10), so a slower one helps nobody.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// The routes the API server and the kubelet call: admission and probes. `metrics` counts and
/// times each request by path and outcome; `policy` is the administrator's (the image
/// repositories allowed, and the authorizer that answers whether a request's author may do what
/// it asks of the operator: [`subject_access::SubjectAccess`] in the operator).
pub fn router(metrics: Arc<Metrics>, readiness: Readiness, policy: etcd_webhook::Policy) -> Router {
    Router::new()
        .merge(etcd_webhook::router(policy))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz).with_state(readiness))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(etcd_webhook::routes::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(metrics, metrics::track))
        .layer(axum::middleware::from_fn(within_deadline))
}

/// `/metrics` alone, for a port of its own: the webhook port must admit the API server from
/// wherever it runs (a NetworkPolicy can only name it by address, often any address), and what
/// the metrics tell (every tenant's cluster names and health) should reach Prometheus only.
pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics::render).with_state(metrics))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(0))
        .layer(axum::middleware::from_fn(within_deadline))
}

/// An unknown path reads the body it was sent before it answers: answered unread, the
/// connection would be closed with the body still arriving, and the client would see a reset
/// instead of the 404.
async fn not_found(_body: axum::body::Bytes) -> StatusCode {
    StatusCode::NOT_FOUND
}

/// Ends a request that takes longer than [`REQUEST_TIMEOUT`], a body that never finishes
/// arriving included, with 408.
async fn within_deadline(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (StatusCode::REQUEST_TIMEOUT, "the request took too long").into_response(),
    }
}

/// Listens on `addr`. The IPv6 wildcard takes IPv4 connections too (Linux's default
/// `bindv6only=0`); on a host whose kernel has IPv6 turned off it falls back to the IPv4 wildcard.
pub async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    let bind_err =
        |addr: std::net::SocketAddr| move |source| Error::Bind { addr: addr.to_string(), source };
    match tokio::net::TcpListener::bind(addr).await {
        Err(err) if addr.ip() == std::net::Ipv6Addr::UNSPECIFIED && ipv6_unavailable(&err) => {
            let v4 = std::net::SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, addr.port()));
            tracing::warn!(%err, "IPv6 is not available here; listening on IPv4 only");
            tokio::net::TcpListener::bind(v4).await.map_err(bind_err(v4))
        }
        other => other.map_err(bind_err(addr)),
    }
}

fn ipv6_unavailable(err: &std::io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL))
}

#[cfg(test)]
mod tests {
    /// The default address takes clients over IPv4 and IPv6 alike.
    #[tokio::test]
    async fn the_wildcard_listener_takes_ipv4_and_ipv6() {
        let listener = super::bind("[::]:0".parse().unwrap()).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("IPv4 client");
        if std::net::TcpListener::bind("[::1]:0").is_ok() {
            tokio::net::TcpStream::connect(("::1", port)).await.expect("IPv6 client");
        }
    }
}
