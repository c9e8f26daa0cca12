//! The PKI `etcd-operator certs issue` writes runs a real 3-member etcd with mutual TLS on peer
//! and client URLs: the issued client certificate reads and writes; no certificate, or one from
//! another CA, is refused.

use std::path::Path;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

async fn connect(urls: &[String], tls: TlsOptions) -> Result<Client, etcd_client::Error> {
    let options = ConnectOptions::new()
        .with_tls(tls)
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(3));
    Client::connect(urls, Some(options)).await
}

/// The call failed because the server refused the TLS connection (a transport error), not for an
/// unrelated reason such as a missing key or a gRPC-level denial.
fn assert_refused<T: std::fmt::Debug>(result: Result<T, etcd_client::Error>, who: &str) {
    let err = result.expect_err(&format!("{who} was served"));
    eprintln!("{who}: {err:?}");
    let refused = match &err {
        etcd_client::Error::TransportError(_) => true,
        // With TLS 1.3 the server checks the client certificate after the client has finished its
        // half of the handshake, so the refusal arrives as the connection being closed under the
        // first call, as a status (Cancelled, Unknown or Unavailable depending on timing) whose
        // cause is a transport error: the connection closed or the pipe broken.
        etcd_client::Error::GRpcStatus(status) => std::error::Error::source(status)
            .is_some_and(|cause| cause.is::<tonic::transport::Error>()),
        _ => false,
    };
    assert!(refused, "{who}: refused for the wrong reason: {err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn issued_pki_runs_a_mutual_tls_cluster_and_refuses_strangers() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let work = tempfile::tempdir().unwrap();
    let pki = work.path().join("pki");
    let other = work.path().join("other");
    crate::support::etcd::issue_pki(&pki, "demo");
    crate::support::etcd::issue_pki(&other, "stranger");
    let cluster = crate::support::etcd::start_tls_cluster(3, &pki, work.path());
    let urls = cluster.client_urls();
    let ca = Certificate::from_pem(read(&pki, "ca.crt"));

    // The operator's client certificate: writes on one member, reads on every member.
    let identity = Identity::from_pem(read(&pki, "client.crt"), read(&pki, "client.key"));
    let mut client =
        connect(&urls, TlsOptions::new().ca_certificate(ca.clone()).identity(identity))
            .await
            .unwrap();
    client.put("greeting", "hello", None).await.unwrap();
    for url in &urls {
        let identity = Identity::from_pem(read(&pki, "client.crt"), read(&pki, "client.key"));
        let mut one = connect(
            std::slice::from_ref(url),
            TlsOptions::new().ca_certificate(ca.clone()).identity(identity),
        )
        .await
        .unwrap();
        let got = one.get("greeting", None).await.unwrap();
        assert_eq!(got.kvs()[0].value(), b"hello", "member {url}");
    }
    let members = client.member_list().await.unwrap();
    assert_eq!(members.members().len(), 3);

    // No client certificate: the handshake or the first call fails.
    let refused = async {
        let mut c = connect(&urls, TlsOptions::new().ca_certificate(ca.clone())).await?;
        c.get("greeting", None).await
    };
    assert_refused(refused.await, "a client without a certificate");

    // A certificate from another cluster's CA.
    let stranger = Identity::from_pem(read(&other, "client.crt"), read(&other, "client.key"));
    let refused = async {
        let mut c =
            connect(&urls, TlsOptions::new().ca_certificate(ca.clone()).identity(stranger)).await?;
        c.get("greeting", None).await
    };
    assert_refused(refused.await, "a client certificate from another CA");
    drop(cluster);
}
