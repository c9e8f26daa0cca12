//! Probes (`pkg/kubelet/prober/`): readiness and liveness, HTTP(S) GET and TCP, each probe with its
//! own period, timeout and failure threshold; HTTPS without verifying the serving certificate, as
//! the kubelet's prober does. A liveness failure kills the container, which the pod worker then
//! restarts with its back-off.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::PodState;

/// Readiness and liveness probes of one running container.
/// Runs until a liveness probe kills the container. `frozen` says when the node hangs: its
/// kubelet probes nothing then.
pub(super) async fn probe_loop(
    frozen: impl Fn() -> bool,
    pod: String,
    ip: String,
    container: Value,
    pid: Option<i32>,
    state: Arc<Mutex<PodState>>,
    index: usize,
) {
    let readiness = container.get("readinessProbe").cloned();
    let liveness = container.get("livenessProbe").cloned();
    let started = Instant::now();
    let mut failures: HashMap<&str, u64> = HashMap::new();
    let mut next: HashMap<&str, Instant> = HashMap::new();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if frozen() {
            continue;
        }
        for (kind, probe) in [("readiness", &readiness), ("liveness", &liveness)] {
            let Some(probe) = probe else { continue };
            let delay = Duration::from_secs(probe["initialDelaySeconds"].as_u64().unwrap_or(0));
            let period = Duration::from_secs(probe["periodSeconds"].as_u64().unwrap_or(10));
            if started.elapsed() < delay || next.get(kind).is_some_and(|n| Instant::now() < *n) {
                continue;
            }
            next.insert(kind, Instant::now() + period);
            let timeout = Duration::from_secs(probe["timeoutSeconds"].as_u64().unwrap_or(1));
            let ok = tokio::time::timeout(timeout, run_probe(&ip, &container, probe))
                .await
                .unwrap_or(false);
            let threshold = probe["failureThreshold"].as_u64().unwrap_or(3);
            let count = failures.entry(kind).or_default();
            *count = if ok { 0 } else { *count + 1 };
            if kind == "readiness" {
                let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                if ok {
                    s.containers[index].ready = true;
                } else if *count >= threshold {
                    s.containers[index].ready = false;
                }
            } else if *count >= threshold
                && let Some(pid) = pid
            {
                tracing::info!(%pod, %ip, ?pid, container = %container["name"], failures = *count, "liveness probe failed; killing the container");
                // SAFETY: a child process we started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                return;
            }
        }
    }
}

fn port_of(container: &Value, port: &Value) -> Option<u16> {
    match port {
        Value::Number(n) => n.as_u64().map(|p| p as u16),
        Value::String(named) => container["ports"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == named.as_str())?["containerPort"]
            .as_u64()
            .map(|p| p as u16),
        _ => None,
    }
}

async fn run_probe(ip: &str, container: &Value, probe: &Value) -> bool {
    if let Some(tcp) = probe.get("tcpSocket") {
        let Some(port) = port_of(container, &tcp["port"]) else { return false };
        return tokio::net::TcpStream::connect((ip, port)).await.is_ok();
    }
    if let Some(http) = probe.get("httpGet") {
        let Some(port) = port_of(container, &http["port"]) else { return false };
        let path = http["path"].as_str().unwrap_or("/");
        let https = http["scheme"] == "HTTPS";
        return http_get(ip, port, path, https)
            .await
            .is_some_and(|code| (200..400).contains(&code));
    }
    true
}

/// An HTTP(S) GET as the kubelet probes: HTTPS without verifying the certificate.
async fn http_get(ip: &str, port: u16, path: &str, https: bool) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect((ip, port)).await.ok()?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/1.33\r\nConnection: close\r\n\r\n"
    );
    let mut buffer = vec![0u8; 64];
    if https {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .ok()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = rustls_pki_types::ServerName::try_from(ip.to_owned()).ok()?;
        let mut stream = connector.connect(name, tcp).await.ok()?;
        stream.write_all(request.as_bytes()).await.ok()?;
        let n = stream.read(&mut buffer).await.ok()?;
        buffer.truncate(n);
    } else {
        let mut tcp = tcp;
        tcp.write_all(request.as_bytes()).await.ok()?;
        let n = tcp.read(&mut buffer).await.ok()?;
        buffer.truncate(n);
    }
    let text = String::from_utf8_lossy(&buffer);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// The kubelet does not verify a probe's serving certificate.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
