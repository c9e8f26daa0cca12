//! The webhook Secret and caBundle through kube::Client against a scripted API server: exact
//! requests, the create-if-absent conflict path, and PEM in the caBundle patch.

use crate::support::apiserver::{Exchange, serve, status_body};
use base64::Engine;
use etcd_operator::tls::cluster_secrets::{
    MembersTrust, PkiOutcome, TrustRollout, bundle_fingerprint, ensure_cluster_pki,
};
use etcd_operator::tls::webhook_secret::WebhookTls;
use http::{Method, StatusCode};
use serde_json::json;

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
    let winner_secret = webhook_secret_json(&winner.serving, &winner.ca, "7");
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

/// `--webhook-certificate provided`: the installer's Secret (no CA key: the operator cannot
/// issue from it) is read and served, nothing is written; until it exists the operator waits.
#[tokio::test]
async fn a_provided_certificate_is_read_and_never_written() {
    let names = ["etcd-operator-webhook.etcd-operator-system.svc".to_owned()];
    let now = time::OffsetDateTime::now_utc();
    let issued = etcd_certs::issue_webhook_pki(&names, now).unwrap();
    let mut secret = webhook_secret_json(&issued.serving, &issued.ca, "3");
    secret["data"].as_object_mut().unwrap().remove("ca.key");
    let (client, recorded) = serve(vec![
        Exchange::new(Method::GET, SECRET_PATH, status_body(404, "NotFound", "not found"))
            .status(StatusCode::NOT_FOUND),
        Exchange::new(Method::GET, SECRET_PATH, secret),
    ]);
    let webhook = tls(client);
    let missing = webhook.read_provided(now).await.unwrap_err();
    assert!(missing.is_transient(), "{missing}");
    assert!(missing.to_string().contains("whoever installs the operator creates it"), "{missing}");
    let served = webhook.read_provided(now).await.unwrap();
    assert_eq!(served.serving, issued.serving);
    assert_eq!(served.ca_pem.as_deref(), Some(issued.ca.cert_pem.as_str()));
    assert_eq!(served.ca_bundle, None, "the configurations' caBundle is the issuer's to keep");
    let seen = recorded.await.unwrap();
    assert!(seen.iter().all(|r| r.method == Method::GET), "{seen:?}");
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
    let secret = webhook_secret_json(&old.serving, &old.ca, "9");
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

const CLUSTER_SECRETS: [&str; 5] =
    ["demo-ca", "demo-peer-tls", "demo-server-tls", "demo-client-tls", "demo-user-client-tls"];

fn cluster_request() -> etcd_certs::ClusterPkiRequest {
    etcd_certs::ClusterPkiRequest {
        cluster: "demo".into(),
        namespace: "prod".into(),
        max_members: 9,
        extra_sans: vec![],
    }
}

fn owner() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: "etcd.example.com/v1alpha1".into(),
        kind: "EtcdCluster".into(),
        name: "demo".into(),
        uid: "0b4c5d6e-1111-2222-3333-444455556666".into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The webhook Secret as the API server would return it.
fn webhook_secret_json(
    serving: &etcd_certs::CertKeyPair,
    ca: &etcd_certs::CertKeyPair,
    resource_version: &str,
) -> serde_json::Value {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "etcd-operator-webhook-tls", "namespace": "etcd-operator-system", "resourceVersion": resource_version},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": b64(&serving.cert_pem), "tls.key": b64(&serving.key_pem), "ca.crt": b64(&ca.cert_pem), "ca.key": b64(&ca.key_pem)}
    })
}

fn cluster_secret_json(
    name: &str,
    pair: &etcd_certs::CertKeyPair,
    ca_pem: &str,
) -> serde_json::Value {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "prod", "resourceVersion": format!("rv-{name}"),
                     "ownerReferences": [owner()]},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": b64(&pair.cert_pem), "tls.key": b64(&pair.key_pem), "ca.crt": b64(ca_pem)}
    })
}

#[tokio::test]
async fn a_new_cluster_gets_five_secrets_owned_by_the_etcd_cluster() {
    let path = |name: &str| format!("/api/v1/namespaces/prod/secrets/{name}");
    let mut script: Vec<Exchange> = CLUSTER_SECRETS
        .iter()
        .map(|name| {
            Exchange::new(Method::GET, path(name), status_body(404, "NotFound", "not found"))
                .status(StatusCode::NOT_FOUND)
        })
        .collect();
    script.extend(CLUSTER_SECRETS.iter().map(|name| {
        Exchange::new(
            Method::POST,
            "/api/v1/namespaces/prod/secrets",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}}),
        )
        .status(StatusCode::CREATED)
    }));
    let (client, recorded) = serve(script);
    let ensured = ensure_cluster_pki(
        &client,
        "prod",
        &cluster_request(),
        &owner(),
        &settled(MembersTrust::NoMembers),
        time::OffsetDateTime::now_utc(),
    )
    .await
    .unwrap();
    let (pki, outcome) = (ensured.pki, ensured.outcome);
    assert_eq!(outcome, PkiOutcome::Created);
    let seen = recorded.await.unwrap();
    let created = &seen[5..];
    let expected = [&pki.ca, &pki.peer, &pki.server, &pki.client, &pki.user_client];
    for ((secret, name), pair) in created.iter().zip(CLUSTER_SECRETS).zip(expected) {
        let body = &secret.body;
        assert_eq!(body["metadata"]["name"], name);
        assert_eq!(body["type"], "kubernetes.io/tls");
        assert_eq!(body["metadata"]["ownerReferences"][0]["kind"], "EtcdCluster");
        assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], owner().uid);
        assert_eq!(body["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(decode(body, "tls.crt"), pair.cert_pem, "{name}");
        assert_eq!(decode(body, "ca.crt"), pki.ca.cert_pem, "{name}");
    }
    let peer_names = etcd_certs::inspect::inspect(&decode(&created[1].body, "tls.crt"), "peer")
        .unwrap()
        .subject_alt_names;
    assert!(peer_names.contains(&"demo-8.demo.prod.svc.cluster.local".to_owned()));
}

#[tokio::test]
async fn only_the_due_leaf_is_replaced_and_the_ca_is_kept() {
    let now = time::OffsetDateTime::now_utc();
    let lifetimes = etcd_certs::Lifetimes::default();
    // Issued 300 days ago (past two thirds of a year): every leaf is due; then all but the peer
    // certificate are re-issued today, so only the peer certificate should be replaced.
    let old =
        etcd_certs::issue_cluster_pki(&cluster_request(), now - time::Duration::days(300)).unwrap();
    let fresh =
        etcd_certs::reissue_cluster_leaves(&cluster_request(), old.ca.clone(), now, &lifetimes)
            .unwrap();
    let stored = [&old.ca, &old.peer, &fresh.server, &fresh.client, &fresh.user_client];
    let path = |name: &str| format!("/api/v1/namespaces/prod/secrets/{name}");
    let mut script: Vec<Exchange> = CLUSTER_SECRETS
        .iter()
        .zip(stored)
        .map(|(name, pair)| {
            Exchange::new(
                Method::GET,
                path(name),
                cluster_secret_json(name, pair, &old.ca.cert_pem),
            )
        })
        .collect();
    script.push(Exchange::new(
        Method::PUT,
        path("demo-peer-tls"),
        cluster_secret_json("demo-peer-tls", &old.peer, &old.ca.cert_pem),
    ));
    let (client, recorded) = serve(script);
    let rollout = settled(MembersTrust::StartedWith(bundle_fingerprint(&old.ca.cert_pem)));
    let ensured = ensure_cluster_pki(&client, "prod", &cluster_request(), &owner(), &rollout, now)
        .await
        .unwrap();
    let (pki, outcome) = (ensured.pki, ensured.outcome);
    let PkiOutcome::Rotated(reason) = outcome else { panic!("{outcome:?}") };
    assert!(reason.starts_with("demo-peer-tls: expires at"), "{reason}");
    assert_eq!(pki.ca, old.ca, "the CA is kept, so members and clients keep trusting");
    assert_eq!(pki.server, fresh.server, "a current leaf is left as it is");
    assert_ne!(pki.peer, old.peer);
    let seen = recorded.await.unwrap();
    assert_eq!(seen.len(), 6, "one replace and nothing else");
    let put = &seen[5].body;
    assert_eq!(put["metadata"]["resourceVersion"], "rv-demo-peer-tls");
    assert_eq!(put["metadata"]["ownerReferences"][0]["name"], "demo");
    assert_eq!(decode(put, "tls.crt"), pki.peer.cert_pem);
    assert_eq!(decode(put, "ca.crt"), old.ca.cert_pem);
}

/// `ensure_round`'s writes when the leaves move mid-rollover: four leaves, then the CA's stamp.
const LEAVES_THEN_CA: usize = 6;

/// Members and propagation as the operator's defaults have them, with `members` running.
fn settled(members: MembersTrust) -> TrustRollout {
    TrustRollout { rotate_ca: None, members, propagation: time::Duration::minutes(3) }
}

/// One reconcile of the cluster PKI: GETs answered from `stored` (name → Secret JSON), then every
/// write answered with its own body; returns what was written, by Secret name, in order.
async fn ensure_round(
    stored: &std::collections::BTreeMap<String, serde_json::Value>,
    writes: usize,
    rollout: &TrustRollout,
    now: time::OffsetDateTime,
) -> (etcd_operator::tls::cluster_secrets::EnsuredPki, Vec<(String, serde_json::Value)>) {
    let path = |name: &str| format!("/api/v1/namespaces/prod/secrets/{name}");
    let mut script: Vec<Exchange> = CLUSTER_SECRETS
        .iter()
        .map(|name| Exchange::new(Method::GET, path(name), stored[*name].clone()))
        .collect();
    // Writes come in the order CA first, then the leaves (and the CA again when leaves move
    // mid-rollover, to restamp it); each is answered with a Secret.
    let order: Vec<&str> = match writes {
        5 => CLUSTER_SECRETS.to_vec(),
        LEAVES_THEN_CA => {
            CLUSTER_SECRETS[1..].iter().chain(&CLUSTER_SECRETS[..1]).copied().collect()
        }
        _ => CLUSTER_SECRETS[5 - writes..].to_vec(),
    };
    script.extend(
        order.iter().map(|name| Exchange::new(Method::PUT, path(name), stored[*name].clone())),
    );
    let (client, recorded) = serve(script);
    let ensured = ensure_cluster_pki(&client, "prod", &cluster_request(), &owner(), rollout, now)
        .await
        .unwrap();
    let seen = recorded.await.unwrap();
    let written = seen[5..]
        .iter()
        .map(|r| (r.body["metadata"]["name"].as_str().unwrap().to_owned(), r.body.clone()))
        .collect();
    (ensured, written)
}

fn signed_by(leaf_pem: &str, ca_pem: &str) -> bool {
    let leaf = etcd_certs::inspect::certificates(leaf_pem, "leaf").unwrap().remove(0);
    let ca = etcd_certs::inspect::certificates(ca_pem, "ca").unwrap().remove(0);
    etcd_certs::inspect::is_signed_by(&leaf, &ca)
}

#[tokio::test]
async fn a_ca_near_expiry_rolls_over_through_a_bundle_without_a_moment_of_distrust() {
    let now = time::OffsetDateTime::now_utc();
    let lifetimes = etcd_certs::Lifetimes::default();
    // A CA issued seven and a half years ago (past two thirds of ten), leaves renewed today.
    let old = etcd_certs::issue_cluster_pki(&cluster_request(), now - time::Duration::days(2740))
        .unwrap();
    let leaves =
        etcd_certs::reissue_cluster_leaves(&cluster_request(), old.ca.clone(), now, &lifetimes)
            .unwrap();
    let pairs = [&old.ca, &leaves.peer, &leaves.server, &leaves.client, &leaves.user_client];
    let mut stored: std::collections::BTreeMap<String, serde_json::Value> = CLUSTER_SECRETS
        .iter()
        .zip(pairs)
        .map(|(name, pair)| (name.to_string(), cluster_secret_json(name, pair, &old.ca.cert_pem)))
        .collect();
    let absorb = |stored: &mut std::collections::BTreeMap<String, serde_json::Value>,
                  written: &[(String, serde_json::Value)]| {
        for (name, body) in written {
            stored.insert(name.clone(), body.clone());
        }
    };

    // Members run with whatever bundle they were last rolled to.
    let on = |bundle: &str| settled(MembersTrust::StartedWith(bundle_fingerprint(bundle)));
    let members_on_old = on(&old.ca.cert_pem);

    // 1. A new CA is introduced: it signs nothing yet, and every Secret trusts both CAs.
    let (ensured, written) = ensure_round(&stored, 5, &members_on_old, now).await;
    assert!(
        matches!(ensured.outcome, PkiOutcome::Rotated(ref r) if r.contains("new CA")),
        "{:?}",
        ensured.outcome
    );
    let (_, ca_secret) = &written[0];
    let new_ca = decode(ca_secret, "tls.crt");
    assert_ne!(new_ca, old.ca.cert_pem);
    assert_eq!(decode(ca_secret, "previous-ca.crt"), old.ca.cert_pem);
    assert!(ca_secret["metadata"]["annotations"]["etcd.etcd.io/trust-bundle-since"].is_string());
    for (name, body) in &written[1..] {
        let bundle = decode(body, "ca.crt");
        assert!(bundle.contains(&new_ca) && bundle.contains(&old.ca.cert_pem), "{name}");
        assert!(
            signed_by(&decode(body, "tls.crt"), &old.ca.cert_pem),
            "{name}: leaf kept until the bundle settles"
        );
    }
    assert_eq!(
        ensured.trust_bundle,
        decode(&written[1].1, "ca.crt"),
        "the operator trusts both too"
    );
    absorb(&mut stored, &written);

    let bundle = ensured.trust_bundle.clone();
    let members_on_bundle = on(&bundle);

    // 2. Right after: the bundle may not have reached every pod yet, so nothing moves.
    let (ensured, written) =
        ensure_round(&stored, 0, &members_on_bundle, now + time::Duration::minutes(1)).await;
    assert!(written.is_empty(), "{written:?}");
    assert_eq!(ensured.outcome, PkiOutcome::Unchanged);

    // 3. Settled, but etcd loads its trusted CAs only at start: while members still run with
    // the old bundle (or are restarting), a leaf from the new CA would be refused by them.
    let later = now + time::Duration::minutes(4);
    for members in [members_on_old, settled(MembersTrust::Restarting)] {
        let (ensured, written) = ensure_round(&stored, 0, &members, later).await;
        assert!(written.is_empty(), "{:?}: {written:?}", members.members);
        assert_eq!(ensured.outcome, PkiOutcome::Unchanged);
    }

    // 4. Once every member restarted with the bundle, the leaves are re-issued by the new CA,
    // still under both.
    let (_, written) = ensure_round(&stored, LEAVES_THEN_CA, &members_on_bundle, later).await;
    let (restamped, leaves) = written.split_last().unwrap();
    assert_eq!(restamped.0, "demo-ca");
    assert_eq!(decode(&restamped.1, "previous-ca.crt"), old.ca.cert_pem, "the old CA stays");
    assert_ne!(
        restamped.1["metadata"]["annotations"]["etcd.etcd.io/trust-bundle-since"],
        stored["demo-ca"]["metadata"]["annotations"]["etcd.etcd.io/trust-bundle-since"],
        "the wait starts again: the new leaves must reach every pod before the old CA goes"
    );
    for (name, body) in leaves {
        assert!(signed_by(&decode(body, "tls.crt"), &new_ca), "{name}");
        assert!(
            decode(body, "ca.crt").contains(&old.ca.cert_pem),
            "{name}: still trusts the old CA"
        );
    }
    absorb(&mut stored, &written);

    // 5. Right after, the new leaves may not be in every pod yet: the old CA stays.
    let (_, written) =
        ensure_round(&stored, 0, &members_on_bundle, later + time::Duration::minutes(1)).await;
    assert!(written.is_empty(), "{written:?}");

    // 6. Every leaf is from the new CA and has settled: the old one leaves the bundle.
    let (ensured, written) =
        ensure_round(&stored, 5, &members_on_bundle, later + time::Duration::minutes(4)).await;
    let (_, ca_secret) = &written[0];
    assert!(ca_secret["data"].get("previous-ca.crt").is_none());
    for (name, body) in &written[1..] {
        assert_eq!(decode(body, "ca.crt"), new_ca, "{name}");
    }
    assert_eq!(ensured.trust_bundle, new_ca);
    absorb(&mut stored, &written);

    // 7. Steady again (the members roll to the bundle of the new CA alone meanwhile).
    let members_on_new = on(&new_ca);
    let (_, written) =
        ensure_round(&stored, 0, &members_on_new, later + time::Duration::minutes(10)).await;
    assert!(written.is_empty(), "{written:?}");
}

#[tokio::test]
async fn a_requested_ca_rotation_starts_once_per_token() {
    let now = time::OffsetDateTime::now_utc();
    let pki = etcd_certs::issue_cluster_pki(&cluster_request(), now).unwrap();
    let pairs = [&pki.ca, &pki.peer, &pki.server, &pki.client, &pki.user_client];
    let stored: std::collections::BTreeMap<String, serde_json::Value> = CLUSTER_SECRETS
        .iter()
        .zip(pairs)
        .map(|(name, pair)| (name.to_string(), cluster_secret_json(name, pair, &pki.ca.cert_pem)))
        .collect();
    let members = MembersTrust::StartedWith(bundle_fingerprint(&pki.ca.cert_pem));
    let asked = |token: &str| TrustRollout {
        rotate_ca: Some(token.to_owned()),
        ..settled(members.clone())
    };
    let (ensured, written) = ensure_round(&stored, 5, &asked("2026-11-24"), now).await;
    assert!(
        matches!(ensured.outcome, PkiOutcome::Rotated(ref r) if r.contains("as requested")),
        "{:?}",
        ensured.outcome
    );
    let ca_secret = &written[0].1;
    assert_ne!(decode(ca_secret, "tls.crt"), pki.ca.cert_pem, "a new CA signs");
    assert_eq!(decode(ca_secret, "previous-ca.crt"), pki.ca.cert_pem, "the old one still trusted");
    assert_eq!(ca_secret["metadata"]["annotations"]["etcd.etcd.io/rotate-ca"], "2026-11-24");

    // The token the CA Secret says was handled starts nothing again; a new token would.
    let mut handled = stored.clone();
    handled.get_mut("demo-ca").unwrap()["metadata"]["annotations"] =
        json!({"etcd.etcd.io/rotate-ca": "2026-11-24"});
    let (ensured, written) = ensure_round(&handled, 0, &asked("2026-11-24"), now).await;
    assert!(written.is_empty(), "{written:?}");
    assert_eq!(ensured.outcome, PkiOutcome::Unchanged);
    let (_, written) = ensure_round(&handled, 5, &asked("2026-12-01"), now).await;
    assert_eq!(written[0].1["metadata"]["annotations"]["etcd.etcd.io/rotate-ca"], "2026-12-01");
}

#[tokio::test]
async fn the_webhook_ca_rolls_over_with_both_cas_in_the_bundle_while_it_matters() {
    let names = etcd_certs::webhook::service_names("etcd-operator-webhook", "etcd-operator-system");
    let now = time::OffsetDateTime::now_utc();
    let lifetimes = etcd_certs::Lifetimes::default();
    let old = etcd_certs::issue_webhook_pki(&names, now - time::Duration::days(2740)).unwrap();
    let serving = etcd_certs::webhook::issue_serving(&old.ca, &names, now, &lifetimes).unwrap();
    let mut secret = webhook_secret_json(&serving, &old.ca, "9");
    // One leader pass: GET, then PUT when something changes; the written Secret is the next state.
    async fn pass(
        secret: &mut serde_json::Value,
        at: time::OffsetDateTime,
        writes: bool,
    ) -> Option<etcd_operator::tls::webhook_secret::WebhookMaterial> {
        let mut script = vec![Exchange::new(Method::GET, SECRET_PATH, secret.clone())];
        if writes {
            script.push(Exchange::new(Method::PUT, SECRET_PATH, secret.clone()));
        }
        let (client, recorded) = serve(script);
        let material = tls(client).rotate_if_due(at).await.unwrap();
        if let Some(put) = recorded.await.unwrap().get(1) {
            *secret = put.body.clone();
        }
        material
    }

    // 1. A new CA, trusted beside the old one; the served certificate does not change yet.
    let introduced = pass(&mut secret, now, true).await.expect("the CA is due");
    assert_ne!(introduced.ca.cert_pem, old.ca.cert_pem);
    assert_eq!(introduced.serving, serving);
    let bundle = introduced.ca_bundle();
    assert!(bundle.contains(&old.ca.cert_pem) && bundle.contains(&introduced.ca.cert_pem));
    // 2. Until the bundle has settled in the webhook configurations, nothing else moves.
    assert!(pass(&mut secret, now + time::Duration::minutes(1), false).await.is_none());
    // 3. Then the serving certificate comes from the new CA, while both are still trusted.
    let later = now + time::Duration::minutes(4);
    let reissued = pass(&mut secret, later, true).await.expect("the leaf moves to the new CA");
    assert!(signed_by(&reissued.serving.cert_pem, &introduced.ca.cert_pem));
    assert_eq!(reissued.ca_bundle(), bundle);
    // 4. The old CA leaves the bundle.
    let retired =
        pass(&mut secret, later + time::Duration::minutes(1), true).await.expect("retired");
    assert_eq!(retired.ca_bundle(), introduced.ca.cert_pem);
    assert_eq!(retired.serving, reissued.serving);
    // 5. Steady.
    assert!(pass(&mut secret, later + time::Duration::minutes(10), false).await.is_none());
}
