//! The kubelet's API (`pkg/kubelet/server/server.go`) on :10250 of every node's address, as far
//! as the API server proxies to it: `GET /containerLogs/NAMESPACE/POD/CONTAINER` (`kubectl logs`,
//! with `tailLines`; `follow` answers what there is and ends) and `/healthz`. Like a kubelet
//! without a serving certificate from the cluster, it serves a self-signed one (the API server is
//! not told a kubelet CA, so it does not verify it), and it trusts its callers: only the API
//! server can reach it here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};

pub const PORT: u16 = 10250;

fn answer(code: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = code;
    response
}

fn logs(dir: &std::path::Path, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let Some(rest) = path.strip_prefix("/containerLogs/") else {
        return match path {
            "/healthz" => answer(StatusCode::OK, "ok"),
            _ => answer(StatusCode::NOT_FOUND, "404 page not found\n"),
        };
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let [namespace, pod, container] = parts[..] else {
        return answer(StatusCode::BAD_REQUEST, "expected /containerLogs/NAMESPACE/POD/CONTAINER");
    };
    if [namespace, pod, container].iter().any(|p| p.is_empty() || p.contains("..")) {
        return answer(StatusCode::BAD_REQUEST, "bad path");
    }
    let file = dir.join(namespace).join(pod).join(format!("{container}.log"));
    let Ok(text) = std::fs::read(&file) else {
        return answer(
            StatusCode::NOT_FOUND,
            format!("container \"{container}\" in pod \"{pod}\" has no logs"),
        );
    };
    let tail = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|p| p.strip_prefix("tailLines="))
        .and_then(|n| n.parse::<usize>().ok());
    let body = match tail {
        Some(n) => {
            let lines: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
            lines[lines.len().saturating_sub(n)..].concat()
        }
        None => text,
    };
    answer(StatusCode::OK, body)
}

/// Serves the kubelet API of every node (they share this process).
pub async fn serve(listener: tokio::net::TcpListener, logs_dir: PathBuf) -> Result<(), String> {
    let cert = rcgen::generate_simple_self_signed(vec!["kube-sim-kubelet".to_owned()])
        .map_err(|e| format!("cannot issue the kubelet's serving certificate: {e}"))?;
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(vec![cert.cert.der().clone()], key))
        .map_err(|e| format!("kubelet TLS: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let logs_dir = Arc::new(logs_dir);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (acceptor, dir) = (acceptor.clone(), logs_dir.clone());
        tokio::spawn(async move {
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let dir = dir.clone();
                async move { Ok::<_, std::convert::Infallible>(logs(&dir, &req)) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}
