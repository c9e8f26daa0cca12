//! The webhook Secret and caBundle through kube::Client against a scripted API server: exact
//! requests, the create-if-absent conflict path, and PEM in the caBundle patch.

mod support;

use base64::Engine;
use etcd_operator::tls::kube_secrets::WebhookTls;
use http::{Method, StatusCode};
use serde_json::json;
use support::apiserver::{Exchange, serve, status_body};

fn tls(client: kube::Client) -> WebhookTls {
    WebhookTls {
        client,
        namespace: "etcd-operator-system".into(),
        secret: "etcd-operator-webhook-tls".into(),
        service: "etcd-operator-webhook".into(),
        configuration: "etcd-operator".into(),
    }
}

const SECRET_PATH: &str =
    "/api/v1/namespaces/etcd-operator-system/secrets/etcd-operator-webhook-tls";
const SECRETS_PATH: &str = "/api/v1/namespaces/etcd-operator-system/secrets";

fn decode(secret: &serde_json::Value, key: &str) -> String {
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(secret["data"][key].as_str().unwrap())
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn absent_secret_is_created_with_ca_and_serving_certificate() {
    let (client, recorded) = serve(vec![
        Exchange::new(Method::GET, SECRET_PATH, status_body(404, "NotFound", "secrets \"etcd-operator-webhook-tls\" not found")).status(StatusCode::NOT_FOUND),
        Exchange::new(Method::POST, SECRETS_PATH, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "etcd-operator-webhook-tls"}})).status(StatusCode::CREATED),
    ]);
    let material = tls(client).ensure(time::OffsetDateTime::now_utc()).await.unwrap();
    let seen = recorded.await.unwrap();
    let created = &seen[1].body;
    assert_eq!(created["type"], "kubernetes.io/tls");
    assert_eq!(decode(created, "tls.crt"), material.serving.cert_pem);
    assert_eq!(decode(created, "ca.crt"), material.ca.cert_pem);
    let names = etcd_certs::inspect::inspect(&material.serving.cert_pem, "serving")
        .unwrap()
        .subject_alt_names;
    assert_eq!(
        names,
        [
            "etcd-operator-webhook.etcd-operator-system.svc",
            "etcd-operator-webhook.etcd-operator-system.svc.cluster.local"
        ]
    );
}

#[tokio::test]
async fn losing_the_create_race_serves_the_winners_certificate() {
    let winner =
        etcd_certs::issue_webhook_pki(&["w".into()], time::OffsetDateTime::now_utc()).unwrap();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let winner_secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "etcd-operator-webhook-tls", "namespace": "etcd-operator-system", "resourceVersion": "7"},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": b64(&winner.serving.cert_pem), "tls.key": b64(&winner.serving.key_pem), "ca.crt": b64(&winner.ca.cert_pem), "ca.key": b64(&winner.ca.key_pem)}
    });
    let (client, recorded) = serve(vec![
        Exchange::new(Method::GET, SECRET_PATH, status_body(404, "NotFound", "not found"))
            .status(StatusCode::NOT_FOUND),
        Exchange::new(
            Method::POST,
            SECRETS_PATH,
            status_body(
                409,
                "AlreadyExists",
                "secrets \"etcd-operator-webhook-tls\" already exists",
            ),
        )
        .status(StatusCode::CONFLICT),
        Exchange::new(Method::GET, SECRET_PATH, winner_secret),
    ]);
    let material = tls(client).ensure(time::OffsetDateTime::now_utc()).await.unwrap();
    assert_eq!(material.serving, winner.serving);
    assert_eq!(material.ca, winner.ca);
    assert_eq!(recorded.await.unwrap().len(), 3);
}

#[tokio::test]
async fn ca_bundle_is_patched_into_every_webhook_of_both_configurations() {
    let webhooks = json!([{"name": "a"}, {"name": "b"}, {"name": "c"}]);
    let config = |kind: &str| json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind, "metadata": {"name": "etcd-operator", "resourceVersion": "42"}, "webhooks": webhooks});
    let v = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/etcd-operator";
    let m = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/etcd-operator";
    let (client, recorded) = serve(vec![
        Exchange::new(Method::GET, v, config("ValidatingWebhookConfiguration")),
        Exchange::new(Method::PATCH, v, config("ValidatingWebhookConfiguration")),
        Exchange::new(Method::GET, m, config("MutatingWebhookConfiguration")),
        Exchange::new(Method::PATCH, m, config("MutatingWebhookConfiguration")),
    ]);
    let bundle = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    tls(client).inject_ca_bundle(bundle).await.unwrap();
    let seen = recorded.await.unwrap();
    for patch in [&seen[1], &seen[3]] {
        assert_eq!(patch.content_type.as_deref(), Some("application/json-patch+json"));
        let ops = patch.body.as_array().unwrap();
        assert_eq!(
            ops[0],
            json!({"op": "test", "path": "/metadata/resourceVersion", "value": "42"})
        );
        assert_eq!(ops.len(), 4);
        for (i, op) in ops[1..].iter().enumerate() {
            assert_eq!(op["path"], format!("/webhooks/{i}/clientConfig/caBundle"));
            let pem = base64::engine::general_purpose::STANDARD
                .decode(op["value"].as_str().unwrap())
                .unwrap();
            assert_eq!(pem, bundle.as_bytes(), "the caBundle carries the PEM bytes");
        }
    }
}

#[tokio::test]
async fn rotation_replaces_only_a_due_certificate_with_a_resource_version_guard() {
    let names = etcd_certs::webhook::service_names("etcd-operator-webhook", "etcd-operator-system");
    let issued_at = time::OffsetDateTime::now_utc() - time::Duration::days(300);
    let old = etcd_certs::issue_webhook_pki(&names, issued_at).unwrap();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "etcd-operator-webhook-tls", "namespace": "etcd-operator-system", "resourceVersion": "9"},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": b64(&old.serving.cert_pem), "tls.key": b64(&old.serving.key_pem), "ca.crt": b64(&old.ca.cert_pem), "ca.key": b64(&old.ca.key_pem)}
    });
    let (client, recorded) = serve(vec![
        Exchange::new(Method::GET, SECRET_PATH, secret.clone()),
        Exchange::new(Method::PUT, SECRET_PATH, secret),
    ]);
    let rotated = tls(client)
        .rotate_if_due(time::OffsetDateTime::now_utc())
        .await
        .unwrap()
        .expect("a 300-day-old leaf is due");
    assert_eq!(rotated.ca, old.ca, "rotation keeps the CA (and so the caBundle)");
    assert_ne!(rotated.serving, old.serving);
    let seen = recorded.await.unwrap();
    assert_eq!(seen[1].body["metadata"]["resourceVersion"], "9");
    assert_eq!(decode(&seen[1].body, "tls.crt"), rotated.serving.cert_pem);
}
