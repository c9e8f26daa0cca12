//! The PKI `etcd-operator certs issue` writes runs a real 3-member etcd with mutual TLS on peer
//! and client URLs: the issued client certificate reads and writes; no certificate, or one from
//! another CA, is refused.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

fn issue(dir: &Path, cluster: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_etcd-operator"))
        .args(["certs", "issue", "--cluster", cluster, "--namespace", "test"])
        .args(["--out", dir.to_str().unwrap(), "--extra-san", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

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

#[tokio::test(flavor = "multi_thread")]
async fn issued_pki_runs_a_mutual_tls_cluster_and_refuses_strangers() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let work = tempfile::tempdir().unwrap();
    let pki = work.path().join("pki");
    let other = work.path().join("other");
    issue(&pki, "demo");
    issue(&other, "stranger");
    let cluster = support::etcd::start_tls_cluster(3, &pki, work.path());
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
    assert!(refused.await.is_err(), "a client without a certificate was served");

    // A certificate from another cluster's CA.
    let stranger = Identity::from_pem(read(&other, "client.crt"), read(&other, "client.key"));
    let refused = async {
        let mut c =
            connect(&urls, TlsOptions::new().ca_certificate(ca.clone()).identity(stranger)).await?;
        c.get("greeting", None).await
    };
    assert!(refused.await.is_err(), "a client certificate from another CA was served");
    drop(cluster);
}
