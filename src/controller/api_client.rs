//! The operator's client of the Kubernetes API: kube's own layers (base URI, credentials that
//! refresh, extra headers, retries of 429/503/504, timeouts) over a connection that speaks
//! HTTP/2 when the API server offers it, as client-go does.
//!
//! kube's default client speaks HTTP/1.1 only, so each watch holds a TLS connection of its own
//! and every request in flight needs another. The operator keeps about ten watches open, and
//! each connection kept a read buffer grown to the size of its largest LIST (hyper grows it up
//! to 400 KiB and keeps it): on kube-sim, with 100 clusters, connection state was more than half
//! of the operator's heap. Over HTTP/2 the watches and requests share one connection (once it
//! has negotiated HTTP/2: requests made at once before that may each open one).
//!
//! kube leaves HTTP/2 off because upgraded requests (exec, attach, port-forward over websockets)
//! fail over it; the operator makes none. Pings every 30 s, answered within 15 s, notice a
//! connection that died silently (client-go's ReadIdleTimeout and PingTimeout): every watch
//! rides on it, so it must not wait for TCP to give up.

use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::ConfigExt;
use kube::client::retry::RetryPolicy;
use tower::ServiceBuilder;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const PING_EVERY: Duration = Duration::from_secs(30);
const PING_ANSWERED_WITHIN: Duration = Duration::from_secs(15);

/// How long a request waits for its answer to begin. kube-apiserver ends any request but a
/// watch (or exec and the like) after its `--request-timeout`, 60 s by default; an answer that
/// has not begun by then is not coming. Over HTTP/2 nothing else would end the wait: the
/// connection's pings are answered, and kube sets no timeout of its own. A watch's answer
/// begins at once, its events follow in the body, which this does not bound.
pub const ANSWER_BEGINS_WITHIN: Duration = Duration::from_secs(70);

/// A client for the cluster the operator runs in (or the kubeconfig's current context).
pub async fn connect() -> Result<kube::Client, kube::Error> {
    let config = kube::Config::infer().await.map_err(kube::Error::InferConfig)?;
    client(config, ANSWER_BEGINS_WITHIN)
}

/// A client for `config`: kube's layers, over HTTP/2 when the server agrees to it by ALPN,
/// giving up on a request whose answer has not begun within `answer_begins_within`.
pub fn client(
    config: kube::Config,
    answer_begins_within: Duration,
) -> Result<kube::Client, kube::Error> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    // An HTTP/2 request with a body is a HEADERS and a DATA frame, often two writes: with
    // Nagle's algorithm on, the second waited for the server's delayed ACK, and a server-side
    // apply took 44 ms instead of 0.3 (kube-sim). Go, and so client-go, sets TCP_NODELAY on
    // every connection.
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config.rustls_client_config()?)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    let transport = hyper_util::client::legacy::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .http2_keep_alive_interval(PING_EVERY)
        .http2_keep_alive_timeout(PING_ANSWERED_WITHIN)
        .http2_keep_alive_while_idle(true)
        .build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| tower::retry::RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .timeout(answer_begins_within)
        .service(transport);
    Ok(kube::Client::new(service, config.default_namespace))
}
