//! The `kubernetes` Service's address (10.96.0.1:443), which pods reach the API server through —
//! what kube-proxy's rules do for that Service on a real node: while the API server is not ready
//! (restarting) the Service has no endpoint and connections are refused, as kube-proxy rejects
//! them; an API server that listens but has not synced its caches yet is not reached through
//! it. One fault is added:
//! `kube-sim fault fail permille=N` answers that share of the requests with a 500 before they
//! reach the API server, as an overloaded or failing API server would. Requests are forwarded
//! as they come (HTTP/1.1 or HTTP/2, watches streamed), with their own credentials.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

type Body = BoxBody<Bytes, hyper::Error>;

/// The share of requests (per mille) answered with a 500.
#[derive(Default)]
pub struct FailRate(AtomicU32);

impl FailRate {
    pub fn set(&self, permille: u32) {
        self.0.store(permille.min(1000), Ordering::SeqCst);
    }

    fn roll(&self) -> bool {
        let permille = self.0.load(Ordering::SeqCst);
        permille > 0 && random_below(1000) < permille
    }
}

fn random_below(n: u32) -> u32 {
    let mut bytes = [0u8; 4];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    u32::from_le_bytes(bytes) % n
}

fn failure() -> Response<Body> {
    let status = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"injected by kube-sim fault fail","reason":"InternalError","code":500}"#;
    let mut response =
        Response::new(Full::new(Bytes::from(status)).map_err(|never| match never {}).boxed());
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
        .headers_mut()
        .insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
    response
}

fn tls_server(cert_pem: &[u8], key_pem: &[u8]) -> Result<rustls::ServerConfig, String> {
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<_> =
        rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem).flatten().collect();
    let key =
        rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn tls_client(ca_pem: &[u8]) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem).flatten() {
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Serves `listener` (the Service address), forwarding to `upstream` (the API server).
pub async fn serve(
    listener: tokio::net::TcpListener,
    upstream: String,
    pki: (Vec<u8>, Vec<u8>, Vec<u8>),
    fail: Arc<FailRate>,
    ready: Arc<dyn Fn() -> bool + Send + Sync>,
) -> Result<(), String> {
    let (ca, cert, key) = pki;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_server(&cert, &key)?));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_client(&ca)?)
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    let client: Client<_, Incoming> = Client::builder(TokioExecutor::new()).build(connector);
    let upstream = Arc::new(upstream);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if !ready() {
            // No endpoint: the connection is closed at once (as close as a listener gets to
            // kube-proxy's reject).
            drop(tcp);
            continue;
        }
        let (acceptor, client, upstream, fail, ready) =
            (acceptor.clone(), client.clone(), upstream.clone(), fail.clone(), ready.clone());
        tokio::spawn(async move {
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (client, upstream, fail, ready) =
                    (client.clone(), upstream.clone(), fail.clone(), ready.clone());
                async move {
                    if !ready() {
                        // The API server went away under an open connection: the connection
                        // ends (an error here makes hyper close it), and the client's next one
                        // is refused until the API server is ready again.
                        return Err(std::io::Error::other("the API server is not ready"));
                    }
                    if fail.roll() {
                        return Ok(failure());
                    }
                    let (mut parts, body) = req.into_parts();
                    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                    let Ok(uri) = format!("{upstream}{path}").parse() else { return Ok(failure()) };
                    parts.uri = uri;
                    // The connector picks the protocol; a pod's HTTP/2 request goes on as is.
                    parts.headers.remove(hyper::header::HOST);
                    match client.request(Request::from_parts(parts, body)).await {
                        Ok(response) => Ok(response.map(BodyExt::boxed)),
                        Err(err) => {
                            tracing::debug!(%err, "API server unreachable through the Service");
                            let mut response = failure();
                            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                            Ok(response)
                        }
                    }
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}
