//! A rotated webhook certificate is served from the next connection on, without restarting the
//! listener, and a client that trusts only the CA accepts both.

use std::sync::Arc;

use crate::support::https::HttpsClient;
use etcd_certs::resolver::{ReloadableCert, certified_key};
use etcd_certs::webhook::issue_serving;
use etcd_operator::server::{Metrics, Readiness, router, serve};

#[tokio::test]
async fn rotation_takes_effect_on_the_next_connection() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let names = vec!["localhost".to_owned()];
    let now = time::OffsetDateTime::now_utc();
    let pki = etcd_certs::issue_webhook_pki(&names, now).unwrap();
    let resolver = Arc::new(ReloadableCert::new(certified_key(&pki.serving).unwrap()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(
        Arc::new(Metrics::default()),
        Readiness::default(),
        crate::support::authorizer::Unreadable::none().policy(),
    );
    tokio::spawn(serve(listener, resolver.clone(), app, std::future::pending()));

    let mut before = HttpsClient::connect(addr, "localhost", &pki.ca.cert_pem).await.unwrap();
    let first = before.server_certificate.clone();
    assert_eq!(before.request("GET", "/healthz", Vec::new()).await.0, 200);

    let rotated = issue_serving(&pki.ca, &names, now, &Default::default()).unwrap();
    resolver.swap(certified_key(&rotated).unwrap());

    let mut after = HttpsClient::connect(addr, "localhost", &pki.ca.cert_pem).await.unwrap();
    assert_ne!(after.server_certificate, first, "the old certificate is still served");
    let expected =
        etcd_certs::inspect::certificates(&rotated.cert_pem, "rotated").unwrap().remove(0);
    assert_eq!(after.server_certificate, expected.to_vec());
    assert_eq!(after.request("GET", "/healthz", Vec::new()).await.0, 200);
    // The connection opened before the swap keeps working.
    assert_eq!(before.request("GET", "/healthz", Vec::new()).await.0, 200);
}
