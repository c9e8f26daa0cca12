//! A real HTTPS client for tests: rustls trusting only the given CA, HTTP/1.1 with keep-alive over
//! one connection, and the certificate the server presented.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub struct HttpsClient {
    sender: SendRequest<Full<Bytes>>,
    /// DER of the certificate the server presented in this connection's handshake.
    pub server_certificate: Vec<u8>,
}

pub fn connector(ca_pem: &str) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

impl HttpsClient {
    /// Connects to `addr`, verifying the server certificate for `server_name` against `ca_pem` only.
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        ca_pem: &str,
    ) -> Result<Self, std::io::Error> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from(server_name.to_owned()).unwrap();
        let tls = connector(ca_pem).connect(name, tcp).await?;
        let server_certificate = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(connection);
        Ok(Self { sender, server_certificate })
    }

    pub async fn request(&mut self, method: &str, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = self.sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
        (status, body)
    }
}
