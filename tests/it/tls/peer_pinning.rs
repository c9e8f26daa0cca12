//! One CA signs a cluster's peer, server and client certificates, so without more a client
//! certificate (a user's, the operator's) is let in at the peer port too, where it can speak raft
//! to the members. Members pin the peer certificate's common name: on a real 3-member cluster
//! of `local` (the configuration a pod's member-init writes), only the peer certificate is let in
//! at a peer port, and the members still reach each other.

use std::path::Path;
use std::sync::Arc;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::support::local::{Local, release_flag};

/// `GET /members` on a peer port with the certificate `part` of `pki`: the status, or why the
/// connection gave none (with TLS 1.3 a refused certificate shows as the connection closing
/// under the request).
async fn peer_members(pki: &Path, part: &str, port: u64) -> Result<u16, String> {
    let pem = |name: &str| std::fs::read(pki.join(name)).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem("ca.crt")) {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer> =
        CertificateDer::pem_slice_iter(&pem(&format!("{part}.crt"))).map(|c| c.unwrap()).collect();
    let key = PrivateKeyDer::from_pem_slice(&pem(&format!("{part}.key"))).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port as u16)).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("http: {e}"))?;
    tokio::spawn(connection);
    let request = hyper::Request::get("/members")
        .header("host", "127.0.0.1")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.map_err(|e| format!("request: {e}"))?;
    Ok(response.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_peer_certificate_is_let_in_at_a_peer_port() {
    let flag = release_flag("3.5.36");
    let local = Local::start_on("3.5.36", 3, &[&flag]);
    local.wait_running(3, std::time::Duration::from_secs(60)).await;
    let pki = local.state().join("pki");
    let ports: serde_json::Value =
        serde_json::from_slice(&std::fs::read(local.state().join("ports.json")).unwrap()).unwrap();
    for member in ["it-0", "it-1", "it-2"] {
        let port = ports[member]["peer"].as_u64().unwrap();
        assert_eq!(
            peer_members(&pki, "peer", port).await,
            Ok(200),
            "{member}: the peer certificate"
        );
        for stranger in ["client", "server"] {
            let result = peer_members(&pki, stranger, port).await;
            assert!(result.is_err(), "{member}: the {stranger} certificate was let in: {result:?}");
        }
    }
}
