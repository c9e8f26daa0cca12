//! The one HTTPS server against clients that hold it: partial headers, a body that never ends,
//! oversized bodies, bodies sent to paths that do not exist. Webhooks, probes and metrics share
//! this server, and with `failurePolicy: Fail` every EtcdCluster write waits on it, so no client
//! may hold it longer than a request takes.

use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::https::{Server, start};
use crate::support::https::{HttpsClient, connector};

/// A TLS connection that speaks HTTP/1.1 by hand.
async fn raw(server: &Server) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    connector(&server.ca_pem).connect(name, tcp).await.unwrap()
}

/// How long until the server ends the connection (reads until EOF or an error), at most `limit`.
async fn closed_after(
    stream: &mut tokio_rustls::client::TlsStream<TcpStream>,
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    let mut buffer = [0u8; 4096];
    let ended = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    ended.ok().map(|()| started.elapsed())
}

/// Before, a client that never finished its headers held its connection for as long as it
/// liked (1,000 of them were all still open after 84 s).
#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_dropped() {
    let server = start().await;
    let mut stream = raw(&server).await;
    stream.write_all(b"POST /validate/etcdclusters HTTP/1.1\r\nhost: localhost\r\n").await.unwrap();
    stream.flush().await.unwrap();
    let closed = closed_after(&mut stream, Duration::from_secs(20)).await;
    assert!(closed.is_some(), "the connection was still open after 20 s");
    // And a connection that sends nothing at all after the handshake.
    let mut idle = raw(&server).await;
    assert!(
        closed_after(&mut idle, Duration::from_secs(20)).await.is_some(),
        "an idle client held on"
    );
}

#[tokio::test]
async fn a_body_that_never_ends_is_dropped() {
    let server = start().await;
    let mut stream = raw(&server).await;
    stream
        .write_all(
            b"POST /validate/etcdclusters HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{\"apiVersion\":",
        )
        .await
        .unwrap();
    stream.flush().await.unwrap();
    let closed = closed_after(&mut stream, Duration::from_secs(30)).await;
    assert!(closed.is_some(), "the connection was still open after 30 s");
}

/// A review holds the object and the old object, each at most what etcd stores behind
/// kube-apiserver (1.5 MiB): a larger body is no review and is refused unread.
#[tokio::test]
async fn a_body_larger_than_any_review_is_refused() {
    let server = start().await;
    let mut client = HttpsClient::connect(server.addr, "localhost", &server.ca_pem).await.unwrap();
    let body = vec![b' '; 4 * 1024 * 1024];
    let (status, _) = client.request("POST", "/validate/etcdclusters", body).await;
    assert_eq!(status, 413);
}

/// A body sent to a path that does not exist is read, then answered 404, and the connection
/// stays usable (before, about 7 in 20,000 such requests had their connection reset).
#[tokio::test]
async fn a_body_sent_to_an_unknown_path_gets_404_on_a_connection_that_stays() {
    let server = start().await;
    let mut client = HttpsClient::connect(server.addr, "localhost", &server.ca_pem).await.unwrap();
    for _ in 0..200 {
        let (status, _) = client.request("POST", "/mutate/", vec![b'x'; 64 * 1024]).await;
        assert_eq!(status, 404);
    }
}
