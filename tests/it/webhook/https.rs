//! The admission webhooks over real HTTPS: the operator's server on a loopback port, a rustls
//! client that trusts only the issued CA, and AdmissionReview bodies shaped as kube-apiserver
//! sends them.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::support::authorizer::Unreadable;
use crate::support::https::HttpsClient;
use base64::Engine;
use etcd_certs::resolver::{ReloadableCert, certified_key};
use etcd_operator::server::{Metrics, Readiness, metrics_router, router, serve};
use serde_json::{Value, json};

/// The operator's HTTPS service on a loopback port, until dropped.
pub(super) struct Server {
    pub(super) addr: SocketAddr,
    pub(super) ca_pem: String,
    /// Where `/metrics` is served: a port of its own.
    metrics_addr: SocketAddr,
    readiness: Readiness,
    _stop: tokio::sync::watch::Sender<()>,
}

pub(super) async fn start() -> Server {
    start_with(Unreadable::none()).await
}

async fn start_with(authorizer: Arc<Unreadable>) -> Server {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pki = etcd_certs::issue_webhook_pki(
        &["localhost".into(), "127.0.0.1".into()],
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let resolver = Arc::new(ReloadableCert::new(certified_key(&pki.serving).unwrap()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = metrics_listener.local_addr().unwrap();
    let readiness = Readiness::default();
    let metrics = Arc::new(Metrics::default());
    let app = router(metrics.clone(), readiness.clone(), authorizer.policy());
    let (stop, stopped) = tokio::sync::watch::channel(());
    let mut stopped_too = stopped.clone();
    let mut stopped = stopped;
    tokio::spawn(serve(listener, resolver.clone(), app, async move {
        let _ = stopped.changed().await;
    }));
    tokio::spawn(serve(metrics_listener, resolver, metrics_router(metrics), async move {
        let _ = stopped_too.changed().await;
    }));
    Server { addr, ca_pem: pki.ca.cert_pem, metrics_addr, readiness, _stop: stop }
}

/// An AdmissionReview as kube-apiserver 1.33 sends it for `kubectl apply` of an EtcdCluster.
fn review(operation: &str, object: Value, old: Value, dry_run: bool) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "etcd.etcd.io", "version": "v1alpha1", "kind": "EtcdCluster"},
            "resource": {"group": "etcd.etcd.io", "version": "v1alpha1", "resource": "etcdclusters"},
            "requestKind": {"group": "etcd.etcd.io", "version": "v1alpha1", "kind": "EtcdCluster"},
            "requestResource": {"group": "etcd.etcd.io", "version": "v1alpha1", "resource": "etcdclusters"},
            "name": "demo",
            "namespace": "prod",
            "operation": operation,
            "userInfo": {"username": "admin", "uid": "014fbff9a07c", "groups": ["system:authenticated", "my-admin-group"]},
            "object": object,
            "oldObject": old,
            "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": if operation == "CREATE" { "CreateOptions" } else { "UpdateOptions" }, "fieldManager": "kubectl-client-side-apply"}
        }
    })
}

fn cluster(spec: Value) -> Value {
    json!({
        "apiVersion": "etcd.etcd.io/v1alpha1",
        "kind": "EtcdCluster",
        "metadata": {"name": "demo", "namespace": "prod", "uid": "0c9f5d1c-5f6b-4d1a-9d39-0d0c1f1b2f6e", "creationTimestamp": null},
        "spec": spec
    })
}

async fn post(client: &mut HttpsClient, path: &str, body: &Value) -> (u16, Value) {
    let (status, bytes) = client.request("POST", path, serde_json::to_vec(body).unwrap()).await;
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

#[tokio::test]
async fn mutate_fills_every_default_with_a_json_patch() {
    let server = start().await;
    let mut client = HttpsClient::connect(server.addr, "localhost", &server.ca_pem).await.unwrap();
    let object = cluster(json!({"size": 3, "version": "v3.5.21"}));
    let (status, answer) = post(
        &mut client,
        "/mutate/etcdclusters",
        &review("CREATE", object.clone(), Value::Null, true),
    )
    .await;
    assert_eq!(status, 200);
    let response = &answer["response"];
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch", "{answer}");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut patched = object.clone();
    json_patch::patch(&mut patched, &patch).unwrap();
    let spec = &patched["spec"];
    assert_eq!(spec["version"], "3.5.21");
    assert_eq!(spec["repository"], etcd_crds::defaults::REPOSITORY);
    assert_eq!(spec["storage"]["size"], "8Gi");
    assert_eq!(spec["security"]["tls"], json!({"enabled": true, "autoTLS": true}));
    assert_eq!(spec["resources"]["requests"]["memory"], "256Mi");
    assert_eq!(spec["options"]["autoCompactionMode"], "Periodic");
    assert_eq!(patched["metadata"], object["metadata"]);

    // The patched object comes back unchanged: no patch the second time (same connection).
    let (_, again) = post(
        &mut client,
        "/mutate/etcdclusters",
        &review("CREATE", patched.clone(), Value::Null, false),
    )
    .await;
    assert_eq!(again["response"]["allowed"], true);
    assert!(again["response"].get("patch").is_none(), "{again}");

    // And the validating webhook admits it.
    let (_, verdict) =
        post(&mut client, "/validate/etcdclusters", &review("CREATE", patched, Value::Null, false))
            .await;
    assert_eq!(verdict["response"]["allowed"], true, "{verdict}");
}

#[tokio::test]
async fn validate_denies_with_every_field_named_and_warns() {
    let server = start().await;
    let mut client = HttpsClient::connect(server.addr, "127.0.0.1", &server.ca_pem).await.unwrap();
    let old = cluster(json!({"size": 3, "version": "3.4.23", "storage": {"size": "10Gi"}}));
    let new = cluster(json!({"size": 4, "version": "3.6.0", "storage": {"size": "5Gi"}}));
    let (status, answer) =
        post(&mut client, "/validate/etcdclusters", &review("UPDATE", new, old.clone(), false))
            .await;
    assert_eq!(status, 200);
    let response = &answer["response"];
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    for needle in [
        "spec.size: must be one of 0, 1, 3, 5, 7, 9; got 4",
        "spec.version: upgrade one minor version at a time",
        "spec.storage.size: may grow but never shrink",
        "spec: change version and size in separate updates",
    ] {
        assert!(message.contains(needle), "{needle:?} not in {message}");
    }

    let single = cluster(json!({"size": 1, "version": "3.4.23", "storage": {"size": "10Gi"}}));
    let (_, answer) =
        post(&mut client, "/validate/etcdclusters", &review("UPDATE", single, old.clone(), false))
            .await;
    assert_eq!(answer["response"]["allowed"], true);
    assert!(
        answer["response"]["warnings"][0].as_str().unwrap().contains("no fault tolerance"),
        "{answer}"
    );

    let (_, deleted) =
        post(&mut client, "/validate/etcdclusters", &review("DELETE", Value::Null, old, false))
            .await;
    assert_eq!(deleted["response"]["allowed"], true);
}

/// Before, anyone who could create an EtcdCluster could have the operator mount any Secret of
/// the namespace into its pods, and an EtcdBackup sign with any credentials there.
#[tokio::test]
async fn a_spec_may_name_only_secrets_its_author_can_read() {
    let authorizer = Unreadable::of(&["payments-tls"]);
    let server = start_with(authorizer.clone()).await;
    let mut client = HttpsClient::connect(server.addr, "localhost", &server.ca_pem).await.unwrap();
    let tls = |server: &str| {
        json!({"size": 3, "version": "3.5.21", "security": {"tls": {"autoTLS": false,
            "peerSecretRef": {"name": "demo-peer"}, "serverSecretRef": {"name": server},
            "clientSecretRef": {"name": "demo-client"}}}})
    };
    let (_, answer) = post(
        &mut client,
        "/validate/etcdclusters",
        &review("CREATE", cluster(tls("payments-tls")), Value::Null, false),
    )
    .await;
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert_eq!(
        message,
        "spec.security.tls.serverSecretRef: admin may not read Secret payments-tls in prod; a \
         spec may name only Secrets its author can read"
    );
    // The author's identity as kube-apiserver sent it, and the namespace, were asked about.
    let asked = authorizer.asked.lock().unwrap()[0].clone();
    assert_eq!(asked.requester.groups, ["system:authenticated", "my-admin-group"]);
    assert_eq!(asked.namespace, "prod");
    assert_eq!(asked.uses.len(), 3);

    let (_, answer) = post(
        &mut client,
        "/validate/etcdclusters",
        &review("CREATE", cluster(tls("demo-server")), Value::Null, false),
    )
    .await;
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
}

/// Before, anyone who could create an EtcdRestore could have the operator delete any cluster of
/// the namespace, and its volumes, with a Replace.
#[tokio::test]
async fn a_replace_needs_the_right_to_delete_the_cluster_it_replaces() {
    let authorizer = Unreadable::of(&["payments"]);
    let server = start_with(authorizer.clone()).await;
    let mut client = HttpsClient::connect(server.addr, "localhost", &server.ca_pem).await.unwrap();
    let replace = |cluster: &str| {
        let restore = json!({
            "apiVersion": "etcd.etcd.io/v1alpha1",
            "kind": "EtcdRestore",
            "metadata": {"name": "undo", "namespace": "prod", "uid": "5d1c0c9f-5f6b-4d1a-9d39-0d0c1f1b2f6e"},
            "spec": {"clusterName": cluster, "type": "Replace",
                     "source": {"location": {"destination": {"volume": {"path": "/backups"}}, "key": "demo.db"}}}
        });
        let mut body = review("CREATE", restore, Value::Null, false);
        let request = &mut body["request"];
        for field in ["kind", "requestKind"] {
            request[field]["kind"] = json!("EtcdRestore");
        }
        for field in ["resource", "requestResource"] {
            request[field]["resource"] = json!("etcdrestores");
        }
        body
    };
    let (_, answer) = post(&mut client, "/validate/etcdrestores", &replace("payments")).await;
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    assert_eq!(
        answer["response"]["status"]["message"],
        "spec.type: admin may not delete EtcdCluster payments in prod; a restore of type Replace \
         deletes the cluster and its volumes first"
    );
    let (_, answer) = post(&mut client, "/validate/etcdrestores", &replace("demo")).await;
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
}

/// Before, any repository ran: a member pod with the cluster's data and Secrets mounted, on an
/// image of the author's choice.
#[tokio::test]
async fn members_run_only_images_the_administrator_allows() {
    let server = start().await;
    let mut client = HttpsClient::connect(server.addr, "localhost", &server.ca_pem).await.unwrap();
    let spec = json!({"size": 3, "version": "3.5.21", "repository": "evil.example/etcd"});
    let (_, answer) = post(
        &mut client,
        "/validate/etcdclusters",
        &review("CREATE", cluster(spec), Value::Null, false),
    )
    .await;
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("spec.repository: evil.example/etcd is not an image repository"),
        "{message}"
    );
    let mirror = json!({"size": 3, "version": "3.5.21", "repository": "quay.io/coreos/etcd"});
    let (_, answer) = post(
        &mut client,
        "/validate/etcdclusters",
        &review("CREATE", cluster(mirror), Value::Null, false),
    )
    .await;
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
}

#[tokio::test]
async fn wrong_kind_is_denied_and_malformed_bodies_get_400_and_413() {
    let server = start().await;
    let mut client = HttpsClient::connect(server.addr, "localhost", &server.ca_pem).await.unwrap();
    let mut body = review("CREATE", cluster(json!({})), Value::Null, false);
    body["request"]["kind"]["kind"] = json!("EtcdCluster");
    let (status, answer) = post(&mut client, "/validate/etcdbackups", &body).await;
    assert_eq!(status, 200);
    assert_eq!(answer["response"]["allowed"], false);
    assert!(
        answer["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("admits etcd.etcd.io EtcdBackup")
    );

    let (status, text) =
        client.request("POST", "/validate/etcdclusters", b"{\"not\": \"a review\"".to_vec()).await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&text).contains("not an AdmissionReview"));

    let (status, _) =
        client.request("POST", "/mutate/etcdclusters", vec![b' '; 9 * 1024 * 1024]).await;
    assert_eq!(status, 413);

    // The server still answers on a new connection after all that.
    let mut fresh = HttpsClient::connect(server.addr, "localhost", &server.ca_pem).await.unwrap();
    let (status, _) = fresh.request("GET", "/healthz", Vec::new()).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn probes_and_metrics() {
    let server = start().await;
    let mut client = HttpsClient::connect(server.addr, "localhost", &server.ca_pem).await.unwrap();
    let (status, _) = client.request("GET", "/readyz", Vec::new()).await;
    assert_eq!(status, 200);
    server.readiness.set("webhook-certificate", Some("rotation failed: Secret is gone".into()));
    let (status, body) = client.request("GET", "/readyz", Vec::new()).await;
    assert_eq!(status, 503);
    assert!(String::from_utf8_lossy(&body).contains("webhook-certificate: rotation failed"));

    post(
        &mut client,
        "/validate/etcdclusters",
        &review("CREATE", cluster(json!({"size": 2})), Value::Null, false),
    )
    .await;
    // Not on the webhook port: that one admits the API server from any address.
    let (status, _) = client.request("GET", "/metrics", Vec::new()).await;
    assert_eq!(status, 404);
    let mut scraper =
        HttpsClient::connect(server.metrics_addr, "localhost", &server.ca_pem).await.unwrap();
    let (status, _) = scraper.request("GET", "/validate/etcdclusters", Vec::new()).await;
    assert_eq!(status, 404, "the metrics port serves /metrics only");
    let (status, body) = scraper.request("GET", "/metrics", Vec::new()).await;
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains(
            r#"etcd_operator_http_requests_total{path="/validate/etcdclusters",result="denied"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains("etcd_operator_http_request_duration_seconds_bucket"), "{text}");
}

#[tokio::test]
async fn a_client_that_trusts_another_ca_is_refused() {
    let server = start().await;
    let other =
        etcd_certs::issue_webhook_pki(&["localhost".into()], time::OffsetDateTime::now_utc())
            .unwrap();
    assert!(HttpsClient::connect(server.addr, "localhost", &other.ca.cert_pem).await.is_err());
    assert!(
        HttpsClient::connect(server.addr, "not-in-the-cert.example", &server.ca_pem).await.is_err()
    );
}
