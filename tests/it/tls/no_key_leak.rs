//! Private keys never reach the logs: a full issuance, the webhook Secret round trip and a
//! certs-dir issuance are run with every log at debug level, and the captured text is searched
//! for key material (PEM, and the base64 the Secret carries). Errors and Debug output too.

use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::support::apiserver::{Exchange, serve, status_body};
use base64::Engine;
use etcd_operator::tls::webhook_secret::WebhookTls;
use http::{Method, StatusCode};
use serde_json::json;
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn key_fragments(key_pem: &str) -> Vec<String> {
    let body: String = key_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    vec![
        "PRIVATE KEY".to_owned(),
        body[..40].to_owned(),
        base64::engine::general_purpose::STANDARD.encode(key_pem)[..40].to_owned(),
    ]
}

#[tokio::test]
async fn issuance_and_secret_round_trip_log_no_key_material() {
    let capture = Capture::default();
    let subscriber =
        tracing_subscriber::fmt().with_env_filter("debug").with_writer(capture.clone()).finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (client, recorded) = serve(vec![
        Exchange::new(
            Method::GET,
            "/api/v1/namespaces/ns/secrets/hook",
            status_body(404, "NotFound", "not found"),
        )
        .status(StatusCode::NOT_FOUND),
        Exchange::new(
            Method::POST,
            "/api/v1/namespaces/ns/secrets",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hook"}}),
        )
        .status(StatusCode::CREATED),
    ]);
    let tls = WebhookTls {
        client,
        namespace: "ns".into(),
        secret: "hook".into(),
        service: "svc".into(),
        configuration: "cfg".into(),
    };
    let material = tls.ensure(time::OffsetDateTime::now_utc()).await.unwrap();
    recorded.await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    etcd_operator::tls::cert_dir::load_or_issue(dir.path(), &["localhost".into()]).unwrap();
    let served_key = std::fs::read_to_string(dir.path().join("tls.key")).unwrap();

    let pki = etcd_certs::issue_cluster_pki(
        &etcd_certs::ClusterPkiRequest {
            cluster: "c".into(),
            namespace: "ns".into(),
            max_members: 9,
            extra_sans: vec![],
        },
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let debug = format!("{pki:?} {material:?}");
    let bad_key = etcd_certs::resolver::certified_key(&etcd_certs::CertKeyPair {
        cert_pem: pki.peer.cert_pem.clone(),
        key_pem: "garbage".into(),
    });
    let error = format!(
        "{:?} {}",
        bad_key.as_ref().err(),
        bad_key.as_ref().err().map(ToString::to_string).unwrap_or_default()
    );

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("created the webhook TLS Secret"), "the capture works: {logs}");
    for key in [
        &material.serving.key_pem,
        &material.ca.key_pem,
        &served_key,
        &pki.peer.key_pem,
        &pki.ca.key_pem,
    ] {
        for fragment in key_fragments(key) {
            assert!(!logs.contains(&fragment), "key material in the logs: {fragment}");
            assert!(!debug.contains(&fragment), "key material in Debug output: {fragment}");
            assert!(!error.contains(&fragment), "key material in an error: {fragment}");
        }
    }
}
