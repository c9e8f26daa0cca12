//! The EtcdCluster reconcile through kube::Client against a scripted API server: the exact
//! requests of the first reconcile of a new 3-member cluster (TLS Secrets, server-side apply of
//! its objects, status, Events, bootstrap entries and StatefulSet scale), and the finalizer.

use std::sync::Arc;

use crate::support::apiserver::{Exchange, Recorded, serve, status_body};
use base64::Engine;
use etcd_crds::EtcdCluster;
use etcd_operator::controller::Context;
use etcd_operator::controller::cluster::{FINALIZER, reconcile};
use http::{Method, StatusCode};
use serde_json::{Value, json};

const NS: &str = "/api/v1/namespaces/prod";

fn cluster(finalizers: Value) -> EtcdCluster {
    serde_json::from_value(json!({
        "apiVersion": "etcd.etcd.io/v1alpha1", "kind": "EtcdCluster",
        "metadata": {"name": "demo", "namespace": "prod", "uid": "0b1c-uid", "generation": 1, "resourceVersion": "5", "finalizers": finalizers},
        "spec": {"size": 3, "version": "3.5.21"}
    }))
    .unwrap()
}

fn not_found() -> Value {
    status_body(404, "NotFound", "not found")
}

fn list(kind: &str) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "metadata": {}, "items": []})
}

fn sts(replicas: i32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "demo"}, "spec": {"replicas": replicas, "selector": {}, "template": {}, "serviceName": "demo"}})
}

fn event() -> Value {
    json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}, "eventTime": "2026-11-22T00:00:00.000000Z"})
}

/// The cluster's status written, as the API server answers it.
fn status_patch() -> Exchange {
    Exchange::new(
        Method::PATCH,
        "/apis/etcd.etcd.io/v1alpha1/namespaces/prod/etcdclusters/demo/status",
        serde_json::to_value(cluster(json!([FINALIZER]))).unwrap(),
    )
}

fn event_post() -> Exchange {
    Exchange::new(Method::POST, "/apis/events.k8s.io/v1/namespaces/prod/events", event())
}

fn configmap(members: &[&str]) -> Value {
    let data: serde_json::Map<String, Value> = members
        .iter()
        .map(|m| {
            (
                format!("{m}.json"),
                Value::String(
                    json!({"name": m, "initialCluster": [], "state": "New", "token": "t"})
                        .to_string(),
                ),
            )
        })
        .collect();
    let owner = json!({"apiVersion": "etcd.etcd.io/v1alpha1", "kind": "EtcdCluster", "name": "demo", "uid": "0b1c-uid", "controller": true});
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "demo-bootstrap", "ownerReferences": [owner]}, "data": data})
}

#[tokio::test]
async fn first_reconcile_adds_the_finalizer_only() {
    let (client, recorded) = serve(vec![Exchange::new(
        Method::PATCH,
        "/apis/etcd.etcd.io/v1alpha1/namespaces/prod/etcdclusters/demo",
        serde_json::to_value(cluster(json!([FINALIZER]))).unwrap(),
    )]);
    let ctx = Arc::new(Context::new(client, "op:1".into(), None));
    reconcile(Arc::new(cluster(json!([]))), ctx).await.unwrap();
    let seen = recorded.await.unwrap();
    assert_eq!(seen[0].content_type.as_deref(), Some("application/json-patch+json"));
    assert!(seen[0].body.to_string().contains(FINALIZER), "{}", seen[0].body);
}

#[tokio::test]
async fn new_cluster_gets_secrets_objects_status_events_and_a_static_bootstrap() {
    // The StatefulSet first: which CA bundle its pods run with gates a CA rollover.
    let mut script = vec![
        Exchange::new(Method::GET, "/apis/apps/v1/namespaces/prod/statefulsets/demo", not_found())
            .status(StatusCode::NOT_FOUND),
    ];
    for secret in
        ["demo-ca", "demo-peer-tls", "demo-server-tls", "demo-client-tls", "demo-user-client-tls"]
    {
        script.push(
            Exchange::new(Method::GET, format!("{NS}/secrets/{secret}"), not_found())
                .status(StatusCode::NOT_FOUND),
        );
    }
    for secret in
        ["demo-ca", "demo-peer-tls", "demo-server-tls", "demo-client-tls", "demo-user-client-tls"]
    {
        script.push(
            Exchange::new(
                Method::POST,
                format!("{NS}/secrets"),
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret}}),
            )
            .status(StatusCode::CREATED),
        );
    }
    // Whose it is, if it exists: the operator writes only what its cluster controls.
    script.push(
        Exchange::new(Method::GET, format!("{NS}/services/demo"), not_found())
            .status(StatusCode::NOT_FOUND),
    );
    script.push(Exchange::new(
        Method::PATCH,
        format!("{NS}/services/demo"),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "demo"}}),
    ));
    // Whose it is, if it exists: the operator writes only what its cluster controls.
    script.push(
        Exchange::new(Method::GET, format!("{NS}/services/demo-client"), not_found())
            .status(StatusCode::NOT_FOUND),
    );
    script.push(Exchange::new(
        Method::PATCH,
        format!("{NS}/services/demo-client"),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "demo-client"}}),
    ));
    // Whose it is, if it exists: the operator writes only what its cluster controls.
    script.push(
        Exchange::new(
            Method::GET,
            "/apis/policy/v1/namespaces/prod/poddisruptionbudgets/demo",
            not_found(),
        )
        .status(StatusCode::NOT_FOUND),
    );
    script.push(Exchange::new(Method::PATCH, "/apis/policy/v1/namespaces/prod/poddisruptionbudgets/demo", json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "demo"}})));
    // The claims, to grow them to the spec's storage size (none yet), before the StatefulSet:
    // a file system that grows only on restart changes its template.
    script.push(Exchange::new(
        Method::GET,
        format!("{NS}/persistentvolumeclaims"),
        list("PersistentVolumeClaimList"),
    ));
    // Whose it is, if it exists: the operator writes only what its cluster controls.
    script.push(
        Exchange::new(Method::GET, "/apis/apps/v1/namespaces/prod/statefulsets/demo", not_found())
            .status(StatusCode::NOT_FOUND),
    );
    script.push(Exchange::new(
        Method::PATCH,
        "/apis/apps/v1/namespaces/prod/statefulsets/demo",
        sts(0),
    ));
    // Which members run etcd.
    script.push(Exchange::new(Method::GET, format!("{NS}/pods"), list("PodList")));
    // Which members have data: the claims listed above (not listed again), less those whose
    // member-init found their volume empty.
    script.push(Exchange::new(Method::GET, format!("{NS}/pods"), list("PodList")));
    // Whether the scheduler placed every member pod (MembersScheduled).
    script.push(Exchange::new(Method::GET, format!("{NS}/pods"), list("PodList")));
    script.push(status_patch());
    script.push(event_post());
    script.push(event_post());
    let admitted: [&[&str]; 3] = [&[], &["demo-0"], &["demo-0", "demo-1"]];
    for (i, before) in admitted.iter().enumerate() {
        let cm = if before.is_empty() {
            Exchange::new(Method::GET, format!("{NS}/configmaps/demo-bootstrap"), not_found())
                .status(StatusCode::NOT_FOUND)
        } else {
            Exchange::new(Method::GET, format!("{NS}/configmaps/demo-bootstrap"), configmap(before))
        };
        script.push(cm);
        script.push(Exchange::new(
            Method::PATCH,
            format!("{NS}/configmaps/demo-bootstrap"),
            configmap(before),
        ));
        script.push(Exchange::new(
            Method::GET,
            "/apis/apps/v1/namespaces/prod/statefulsets/demo",
            sts(i as i32),
        ));
        script.push(Exchange::new(
            Method::PATCH,
            "/apis/apps/v1/namespaces/prod/statefulsets/demo",
            sts(i as i32 + 1),
        ));
    }
    let expected = script.len();
    let (client, recorded) = serve(script);
    let ctx = Arc::new(Context::new(
        client,
        "registry.example/etcd-operator:1".into(),
        Some("op-0".into()),
    ));
    reconcile(Arc::new(cluster(json!([FINALIZER]))), ctx).await.unwrap();
    let seen: Vec<Recorded> = recorded.await.unwrap();
    assert_eq!(seen.len(), expected);

    // Secrets: kubernetes.io/tls, owned by the cluster, peer certificate covering the members.
    let peer = &seen[7].body;
    assert_eq!(peer["metadata"]["name"], "demo-peer-tls");
    assert_eq!(peer["type"], "kubernetes.io/tls");
    assert_eq!(peer["metadata"]["ownerReferences"][0]["uid"], "0b1c-uid");
    let names = etcd_certs::inspect::inspect(&decode_field(peer, "tls.crt"), "peer")
        .unwrap()
        .subject_alt_names;
    assert!(names.contains(&"demo-2.demo.prod.svc".to_owned()));

    // Server-side apply of the objects, with our field manager; not forced, since none existed
    // (one that someone else created meanwhile conflicts instead of being taken over).
    for i in [12, 14, 16, 19] {
        assert_eq!(seen[i - 1].method, Method::GET, "#{i}: ownership is read first");
        assert_eq!(seen[i].content_type.as_deref(), Some("application/apply-patch+yaml"), "#{i}");
        assert!(
            seen[i].query.contains("fieldManager=etcd-operator")
                && !seen[i].query.contains("force=true"),
            "#{i}: {}",
            seen[i].query
        );
    }
    assert_eq!(
        seen[19].body["spec"]["replicas"], 0,
        "a new StatefulSet starts with no admitted member"
    );
    assert_eq!(seen[19].body["spec"]["podManagementPolicy"], "Parallel");
    // The pods carry the fingerprint of the CA bundle they load: a new bundle rolls them.
    let bundle = decode_field(peer, "ca.crt");
    assert_eq!(
        seen[19].body["spec"]["template"]["metadata"]["annotations"]["etcd.etcd.io/trust-bundle"],
        etcd_operator::tls::cluster_secrets::bundle_fingerprint(&bundle)
    );

    // Status applied before acting: phase Creating, conditions, selector, generation.
    assert_eq!(seen[23].content_type.as_deref(), Some("application/apply-patch+yaml"));
    let status = &seen[23].body["status"];
    assert_eq!(status["phase"], "Creating");
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["selector"], "app.kubernetes.io/instance=demo,app.kubernetes.io/name=etcd");
    let conditions: Vec<&str> = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        conditions,
        [
            "Ready",
            "Available",
            "Progressing",
            "Degraded",
            "VolumeExpansion",
            "MembersScheduled",
            "ImagesPulled"
        ]
    );

    // Events: the phase change and the bootstrap.
    assert_eq!(seen[24].body["reason"], "PhaseChanged");
    assert_eq!(seen[25].body["reason"], "Bootstrap");
    assert_eq!(seen[25].body["regarding"]["name"], "demo");

    // Each member's bootstrap entry (static, state New, all three peers), then one more pod.
    for (round, member) in ["demo-0", "demo-1", "demo-2"].iter().enumerate() {
        let cm = &seen[27 + round * 4].body;
        let entry: Value =
            serde_json::from_str(cm["data"][format!("{member}.json")].as_str().unwrap()).unwrap();
        assert_eq!(entry["state"], "New");
        assert_eq!(entry["initialCluster"].as_array().unwrap().len(), 3);
        assert_eq!(entry["initialCluster"][2]["peerURL"], "https://demo-2.demo.prod.svc:2380");
        assert_eq!(seen[29 + round * 4].body, json!({"spec": {"replicas": round + 1}}));
    }
}

#[tokio::test]
async fn a_missing_user_secret_is_a_condition_and_no_membership_step() {
    let pki = etcd_certs::issue_cluster_pki(
        &etcd_certs::ClusterPkiRequest {
            cluster: "demo".into(),
            namespace: "prod".into(),
            max_members: 3,
            extra_sans: Vec::new(),
        },
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let peer = json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "my-peer"}, "type": "kubernetes.io/tls",
        "data": etcd_certs::secret::tls_secret_data(&pki.peer, &pki.ca.cert_pem)
    });
    let mut object = cluster(json!([FINALIZER]));
    object.spec.security.tls.auto_tls = false;
    object.spec.security.tls.peer_secret_ref =
        Some(etcd_crds::SecretReference { name: "my-peer".into() });
    object.spec.security.tls.server_secret_ref =
        Some(etcd_crds::SecretReference { name: "my-server".into() });
    object.spec.security.tls.client_secret_ref =
        Some(etcd_crds::SecretReference { name: "my-client".into() });
    let (client, recorded) = serve(vec![
        Exchange::new(Method::GET, "/apis/apps/v1/namespaces/prod/statefulsets/demo", not_found())
            .status(StatusCode::NOT_FOUND),
        Exchange::new(Method::GET, format!("{NS}/secrets/my-peer"), peer),
        Exchange::new(Method::GET, format!("{NS}/secrets/my-server"), not_found())
            .status(StatusCode::NOT_FOUND),
        Exchange::new(
            Method::PATCH,
            "/apis/etcd.etcd.io/v1alpha1/namespaces/prod/etcdclusters/demo/status",
            serde_json::to_value(cluster(json!([FINALIZER]))).unwrap(),
        ),
        Exchange::new(Method::POST, "/apis/events.k8s.io/v1/namespaces/prod/events", event()),
    ]);
    let ctx = Arc::new(Context::new(client, "op:1".into(), None));
    let action = reconcile(Arc::new(object), ctx).await.unwrap();
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(30))
    );
    let seen = recorded.await.unwrap();
    let condition = &seen[3].body["status"]["conditions"][0];
    assert_eq!(condition["type"], "TLSSecretsValid");
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "SecretMissing");
    assert!(condition["message"].as_str().unwrap().contains("my-server"), "{condition}");
    assert_eq!(seen[4].body["type"], "Warning");
}

/// An EtcdCluster named `demo` in a namespace that already has a Secret `demo-server-tls` of
/// someone else's: before, the operator replaced it with its own certificate, added the cluster's
/// ownerReference (so the garbage collector deleted it with the cluster), and created the rest.
/// Now nothing is written; the condition names the Secret.
#[tokio::test]
async fn a_secret_of_someone_elses_is_never_written() {
    let theirs = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "demo-server-tls", "namespace": "prod", "resourceVersion": "7"},
        "data": {"tls.crt": "", "tls.key": ""}
    });
    let mut script = vec![
        Exchange::new(Method::GET, "/apis/apps/v1/namespaces/prod/statefulsets/demo", not_found())
            .status(StatusCode::NOT_FOUND),
    ];
    for secret in
        ["demo-ca", "demo-peer-tls", "demo-server-tls", "demo-client-tls", "demo-user-client-tls"]
    {
        let path = format!("{NS}/secrets/{secret}");
        script.push(if secret == "demo-server-tls" {
            Exchange::new(Method::GET, path, theirs.clone())
        } else {
            Exchange::new(Method::GET, path, not_found()).status(StatusCode::NOT_FOUND)
        });
    }
    script.push(status_patch());
    script.push(event_post());
    let expected = script.len();
    let (client, recorded) = serve(script);
    let ctx = Arc::new(Context::new(client, "op:1".into(), None));
    reconcile(Arc::new(cluster(json!([FINALIZER]))), ctx).await.unwrap();
    let seen = recorded.await.unwrap();
    assert_eq!(seen.len(), expected, "nothing but the status and an Event is written");
    let condition = &seen[6].body["status"]["conditions"][0];
    assert_eq!(condition["type"], "TLSSecretsValid");
    assert_eq!(
        (condition["status"].as_str(), condition["reason"].as_str()),
        (Some("False"), Some("ObjectNotOwned"))
    );
    let message = condition["message"].as_str().unwrap();
    assert!(
        message.contains("Secret demo-server-tls") && message.contains("no controller"),
        "{message}"
    );
}

/// An EtcdCluster admitted before its repository was refused (or by an operator with another
/// list) runs nothing new: no Secret, no apply, a condition saying what to allow.
#[tokio::test]
async fn a_repository_the_administrator_does_not_allow_changes_nothing() {
    let mut object = cluster(json!([FINALIZER]));
    object.spec.repository = "evil.example/etcd".into();
    let script = vec![
        Exchange::new(Method::GET, "/apis/apps/v1/namespaces/prod/statefulsets/demo", not_found())
            .status(StatusCode::NOT_FOUND),
        status_patch(),
        event_post(),
    ];
    let (client, recorded) = serve(script);
    let ctx = Arc::new(Context::new(client, "op:1".into(), None));
    reconcile(Arc::new(object), ctx).await.unwrap();
    let seen = recorded.await.unwrap();
    let condition = &seen[1].body["status"]["conditions"][0];
    assert_eq!(condition["type"], "ImageAllowed");
    assert_eq!(condition["reason"], "RepositoryNotAllowed");
    let message = condition["message"].as_str().unwrap();
    assert!(
        message.contains("evil.example/etcd") && message.contains("gcr.io/etcd-development/etcd"),
        "{message}"
    );
}

/// A Secret's data field, decoded.
fn decode_field(secret: &serde_json::Value, key: &str) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(secret["data"][key].as_str().unwrap())
        .unwrap();
    String::from_utf8(bytes).unwrap()
}
