//! What a tenant's EtcdBackup can make the operator reach, tried as an attacker would: a listener
//! on loopback stands for the attacker's server, the cloud metadata service or an internal
//! Service, and records every request that reaches it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_crds::{BackupDestination, S3Destination};
use etcd_operator::backup::Location;
use etcd_operator::backup::endpoints::EndpointPolicy;
use etcd_operator::backup::location::Access;
use object_store::ObjectStoreExt;

/// A server on loopback that answers every request with `answer` and keeps what it was sent.
struct Listener {
    port: u16,
    seen: Arc<Mutex<String>>,
}

impl Listener {
    fn start(answer: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(String::new()));
        let kept = seen.clone();
        std::thread::spawn(move || {
            for mut connection in listener.incoming().flatten() {
                let _ = connection.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buffer = [0u8; 8192];
                let read = connection.read(&mut buffer).unwrap_or(0);
                kept.lock().unwrap().push_str(&String::from_utf8_lossy(&buffer[..read]));
                let _ = connection.write_all(answer.as_bytes());
            }
        });
        Self { port, seen }
    }

    fn seen(&self) -> String {
        self.seen.lock().unwrap().clone()
    }
}

fn s3(endpoint: &str) -> BackupDestination {
    BackupDestination {
        s3: Some(S3Destination {
            bucket: "b".into(),
            prefix: "p".into(),
            endpoint: Some(endpoint.to_owned()),
            region: None,
            force_path_style: true,
        }),
        ..Default::default()
    }
}

fn keys(extra: &[(&str, String)]) -> BTreeMap<String, String> {
    [("AWS_ACCESS_KEY_ID", "id".to_owned()), ("AWS_SECRET_ACCESS_KEY", "secret".to_owned())]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// The attack as found: a Secret naming a container-credentials URL and the operator's own
/// service-account token file. Before, the listener received `authorization: <the token>`.
#[tokio::test]
async fn a_credentials_secret_cannot_send_the_operators_token_anywhere() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let attacker =
        Listener::start("HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n");
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "operator-service-account-token").unwrap();
    let credentials = BTreeMap::from([
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI".to_owned(),
            format!("http://127.0.0.1:{}/creds", attacker.port),
        ),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE".to_owned(), token.display().to_string()),
    ]);
    // Even with loopback allowed for the store itself.
    let endpoints = EndpointPolicy::parse(&["127.0.0.1"]).unwrap();
    let access = Access::Tenant { credentials: &credentials, endpoints: &endpoints };
    let err = Location::for_destination(&s3("http://127.0.0.1:9"), &access).unwrap_err();
    assert!(err.to_string().contains("AWS_CONTAINER_CREDENTIALS_FULL_URI"), "{err}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(attacker.seen(), "", "the listener was called");
}

/// An endpoint inside the node or the cluster is refused before anything is sent, by address or
/// by a name that resolves there; an administrator's allow list lets one through.
#[tokio::test]
async fn an_endpoint_inside_the_cluster_is_not_called() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let internal = Listener::start("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}");
    let credentials = keys(&[]);
    let nothing = EndpointPolicy::default();
    let access = Access::Tenant { credentials: &credentials, endpoints: &nothing };
    for endpoint in [
        format!("http://127.0.0.1:{}", internal.port),
        format!("https://127.0.0.1:{}", internal.port),
        "https://169.254.169.254".to_owned(),
    ] {
        let err = Location::for_destination(&s3(&endpoint), &access).unwrap_err().to_string();
        assert!(err.contains("--backup-endpoint-allow"), "{endpoint}: {err}");
    }
    // A name is checked where it resolves, at each connection.
    let by_name = format!("https://localhost:{}", internal.port);
    let location = Location::for_destination(&s3(&by_name), &access).unwrap();
    let err = location.store.get(&location.child("x").path).await.unwrap_err();
    let message = etcd_operator::backup::Error::Store {
        what: "read",
        location: location.url.clone(),
        source: err,
    }
    .for_tenant();
    assert!(message.contains("localhost is 127.0.0.1"), "{message}");
    assert_eq!(internal.seen(), "", "the internal listener was called");

    // Allowed by the administrator: the same listener is reached.
    let allowed = EndpointPolicy::parse(&["127.0.0.0/8"]).unwrap();
    let access = Access::Tenant { credentials: &credentials, endpoints: &allowed };
    let endpoint = format!("http://127.0.0.1:{}", internal.port);
    let location = Location::for_destination(&s3(&endpoint), &access).unwrap();
    let _ = location.store.get(&location.child("x").path).await;
    assert!(internal.seen().contains("GET /b/p/x"), "{}", internal.seen());
}

/// Whatever answers at a tenant's endpoint is not copied into what the tenant can read.
#[tokio::test]
async fn a_stores_answer_is_not_read_back_to_the_tenant() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let store = Listener::start(
        "HTTP/1.1 400 Bad Request\r\ncontent-length: 30\r\n\r\nINTERNAL-SECRET-aws-account-42",
    );
    let credentials = keys(&[]);
    let allowed = EndpointPolicy::parse(&["127.0.0.1"]).unwrap();
    let access = Access::Tenant { credentials: &credentials, endpoints: &allowed };
    let location =
        Location::for_destination(&s3(&format!("http://127.0.0.1:{}", store.port)), &access)
            .unwrap();
    let err = location.store.get(&location.child("x").path).await.unwrap_err();
    let url = location.url.clone();
    let err =
        etcd_operator::backup::Error::Store { what: "read", location: url.clone(), source: err };
    assert!(etcd_operator::telemetry::chain(&err).contains("INTERNAL-SECRET"), "{err}");
    let message = err.for_tenant();
    assert!(!message.contains("INTERNAL-SECRET"), "{message}");
    assert!(message.contains("HTTP 400"), "{message}");

    // An upload fails inside the writer, which wraps the store's error in an I/O error.
    let put = location.store.put(&location.child("y").path, "x".into()).await.unwrap_err();
    let err = etcd_operator::backup::Error::Io {
        what: "cannot upload the snapshot to",
        path: url,
        source: std::io::Error::other(put),
    };
    assert!(etcd_operator::telemetry::chain(&err).contains("INTERNAL-SECRET"), "{err}");
    let message = err.for_tenant();
    assert!(!message.contains("INTERNAL-SECRET") && message.contains("HTTP 400"), "{message}");
}
