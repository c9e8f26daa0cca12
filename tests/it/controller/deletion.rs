//! Deleting an EtcdCluster through its finalizer, against a scripted API server: the final
//! backup (taken from a real etcd with mutual TLS into a real volume destination, verified and
//! recorded) comes before anything is deleted; a backup that cannot be stored holds the deletion
//! and says why; the skip annotation lets it go on; claims go only under reclaimPolicy Delete.

use std::sync::Arc;

use crate::support::apiserver::{Exchange, Recorded, serve, status_body};
use crate::support::etcd::{fill, issue_pki, start_tls_cluster};
use base64::Engine;
use etcd_crds::EtcdCluster;
use etcd_operator::controller::Context;
use etcd_operator::controller::cluster::{FINALIZER, reconcile};
use etcd_operator::etcd::ClientTls;
use http::{Method, StatusCode};
use serde_json::{Value, json};

const CRD: &str = "/apis/etcd.etcd.io/v1alpha1/namespaces/prod";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/prod/events";
const PVCS: &str = "/api/v1/namespaces/prod/persistentvolumeclaims";

/// The cluster `main`, being deleted.
fn deleting(spec: Value, annotations: Value, endpoints: Vec<String>) -> EtcdCluster {
    serde_json::from_value(json!({
        "apiVersion": "etcd.etcd.io/v1alpha1", "kind": "EtcdCluster",
        "metadata": {"name": "main", "namespace": "prod", "uid": "c-uid", "generation": 1,
                     "resourceVersion": "5", "finalizers": [FINALIZER], "annotations": annotations,
                     "deletionTimestamp": "2026-11-25T00:00:00Z"},
        "spec": spec,
        "status": {"phase": "Running", "clientEndpoints": endpoints}
    }))
    .unwrap()
}

fn backups(items: Vec<Value>) -> Value {
    json!({"apiVersion": "etcd.etcd.io/v1alpha1", "kind": "EtcdBackupList", "metadata": {}, "items": items})
}

fn etcd_backup(name: &str, cluster: &str, destination: Value) -> Value {
    json!({
        "apiVersion": "etcd.etcd.io/v1alpha1", "kind": "EtcdBackup",
        "metadata": {"name": name, "namespace": "prod", "uid": format!("{name}-uid")},
        "spec": {"clusterRef": {"name": cluster}, "destination": destination, "retention": 2},
        "status": {"phase": "Succeeded"}
    })
}

fn event() -> Value {
    json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}, "eventTime": "2026-11-25T00:00:00.000000Z"})
}

fn status_patch() -> Exchange {
    let object = deleting(json!({"size": 3}), json!({}), vec![]);
    Exchange::new(
        Method::PATCH,
        format!("{CRD}/etcdclusters/main/status"),
        serde_json::to_value(object).unwrap(),
    )
}

/// The finalizer's removal, answered with the cluster as the API server leaves it.
fn finalizer_removed() -> Exchange {
    let mut gone = serde_json::to_value(deleting(json!({"size": 3}), json!({}), vec![])).unwrap();
    gone["metadata"]["finalizers"] = json!([]);
    Exchange::new(Method::PATCH, format!("{CRD}/etcdclusters/main"), gone)
}

fn final_condition(patch: &Recorded) -> Value {
    let conditions = patch.body["status"]["conditions"].as_array().unwrap();
    conditions.iter().find(|c| c["type"] == "FinalBackup").cloned().unwrap()
}

async fn delete(cluster: EtcdCluster, script: Vec<Exchange>) -> (bool, Vec<Recorded>) {
    let (client, recorded) = serve(script);
    let ctx = Arc::new(Context::new(client, "op:1".into(), None));
    let done = reconcile(Arc::new(cluster), ctx).await.is_ok();
    (done, recorded.await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_final_backup_is_stored_verified_and_recorded_before_the_finalizer_goes() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let work = tempfile::tempdir().unwrap();
    let pki = work.path().join("pki");
    issue_pki(&pki, "main");
    let etcd = start_tls_cluster(1, &pki, work.path());
    let tls = ClientTls::from_files(
        &pki.join("ca.crt"),
        &pki.join("client.crt"),
        &pki.join("client.key"),
    )
    .unwrap();
    let mut client = etcd_operator::etcd::connect(&etcd.client_urls(), Some(&tls)).await.unwrap();
    fill(&mut client, "/data/", 0..50, 16).await;
    let b64 = |name: &str| {
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(pki.join(name)).unwrap())
    };
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "main-client-tls", "namespace": "prod"},
        "data": {"tls.crt": b64("client.crt"), "tls.key": b64("client.key"), "ca.crt": b64("ca.crt")}
    });
    let dir = work.path().join("backups");
    let volume = json!({"volume": {"path": dir.to_str().unwrap()}});
    let cluster = deleting(json!({"size": 1}), json!({}), etcd.client_urls());
    let (done, seen) = delete(
        cluster,
        vec![
            // Another cluster's backup is no destination for this one.
            Exchange::new(
                Method::GET,
                format!("{CRD}/etcdbackups"),
                backups(vec![
                    etcd_backup("nightly", "main", volume.clone()),
                    etcd_backup("other", "elsewhere", volume),
                ]),
            ),
            Exchange::new(Method::GET, "/api/v1/namespaces/prod/secrets/main-client-tls", secret),
            Exchange::new(
                Method::PATCH,
                format!("{CRD}/etcdbackups/nightly/status"),
                etcd_backup("nightly", "main", json!({})),
            ),
            Exchange::new(Method::POST, EVENTS, event()),
            status_patch(),
            Exchange::new(Method::POST, EVENTS, event()),
            finalizer_removed(),
        ],
    )
    .await;
    assert!(done, "{seen:#?}");

    let record = &seen[2].body["status"]["backups"][0];
    let location = record["location"].as_str().unwrap();
    assert!(location.contains("/prod/nightly/main-final-"), "{location}");
    assert!(record["verifiedTime"].is_string(), "{record}");
    assert!(record["keyCount"].as_i64().unwrap() >= 50, "{record}");
    assert_eq!(seen[3].body["reason"], "FinalBackupSucceeded");
    let condition = final_condition(&seen[4]);
    assert_eq!(condition["status"], "True");
    assert_eq!(condition["reason"], "FinalBackupStored");
    assert!(condition["message"].as_str().unwrap().contains(location), "{condition}");

    // The snapshot restores, and holds what the cluster held.
    let restored = work.path().join("restored");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_etcd-operator"))
        .args(["restore", "--from", location, "--data-dir", restored.to_str().unwrap()])
        .args(["--name", "m-0", "--initial-cluster", "m-0=http://127.0.0.1:1"])
        .args(["--initial-advertise-peer-urls", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(restored.join("member/snap/db").exists());
}

#[tokio::test]
async fn a_backup_that_cannot_be_stored_holds_the_deletion_and_says_how_to_skip_it() {
    let cluster =
        deleting(json!({"size": 3}), json!({}), vec!["https://main-0.main.prod.svc:2379".into()]);
    let s3 = json!({"s3": {"bucket": "b", "region": "us-east-1"}});
    let mut nightly = etcd_backup("nightly", "main", s3);
    nightly["spec"]["credentialsSecretRef"] = json!({"name": "s3-creds"});
    let missing = status_body(404, "NotFound", "secrets \"s3-creds\" not found");
    let (done, seen) = delete(
        cluster,
        vec![
            Exchange::new(Method::GET, format!("{CRD}/etcdbackups"), backups(vec![nightly])),
            Exchange::new(
                Method::GET,
                "/api/v1/namespaces/prod/secrets/main-client-tls",
                missing.clone(),
            )
            .status(StatusCode::NOT_FOUND),
            status_patch(),
            Exchange::new(Method::POST, EVENTS, event()),
        ],
    )
    .await;
    assert!(!done, "the finalizer stays: {seen:#?}");
    assert!(seen.iter().all(|r| r.method != Method::DELETE), "nothing deleted");
    let condition = final_condition(&seen[2]);
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "FinalBackupFailed");
    let message = condition["message"].as_str().unwrap();
    assert!(
        message.contains("EtcdBackup nightly") && message.contains("main-client-tls"),
        "{message}"
    );
    assert!(message.contains("etcd.etcd.io/skip-final-backup="), "{message}");
    assert_eq!(seen[3].body["type"], "Warning");
}

/// A claim as the API server lists it, with the selector's labels.
fn claim(name: &str, uid: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {
        "name": name, "namespace": "prod", "uid": uid,
        "labels": {"app.kubernetes.io/name": "etcd", "app.kubernetes.io/instance": "main"}}})
}

#[tokio::test]
async fn the_skip_annotation_lets_the_deletion_go_on_and_claims_go_under_reclaim_delete() {
    let spec = json!({"size": 3, "storage": {"reclaimPolicy": "Delete"}});
    let skip = json!({"etcd.etcd.io/skip-final-backup": "test data"});
    // Bitnami's etcd release `main` labels its claims as the cluster `main` does: its claim
    // (`data-main-etcd-0`) is listed too, and must stay.
    let items = vec![
        claim("data-main-0", "u0"),
        claim("data-main-etcd-0", "bitnami"),
        claim("data-main-1", "u1"),
    ];
    let claims = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaimList", "metadata": {}, "items": items});
    let (done, seen) = delete(
        deleting(spec, skip, vec![]),
        vec![
            status_patch(),
            Exchange::new(Method::POST, EVENTS, event()),
            Exchange::new(Method::GET, PVCS, claims),
            Exchange::new(
                Method::DELETE,
                format!("{PVCS}/data-main-0"),
                claim("data-main-0", "u0"),
            ),
            Exchange::new(
                Method::DELETE,
                format!("{PVCS}/data-main-1"),
                claim("data-main-1", "u1"),
            ),
            Exchange::new(Method::POST, EVENTS, event()),
            finalizer_removed(),
        ],
    )
    .await;
    assert!(done, "{seen:#?}");
    let condition = final_condition(&seen[0]);
    assert_eq!(condition["reason"], "FinalBackupSkipped");
    assert!(condition["message"].as_str().unwrap().contains("test data"), "{condition}");
    assert!(
        seen[2].query.contains("labelSelector=app.kubernetes.io%2Finstance%3Dmain"),
        "{}",
        seen[2].query
    );
    // Each claim deleted as it was listed: one made again under its name meanwhile stays.
    assert_eq!(seen[3].body["preconditions"]["uid"], "u0");
    assert_eq!(seen[4].body["preconditions"]["uid"], "u1");
    assert_eq!(seen[5].body["reason"], "VolumesDeleted");
    let patch = seen[6].body.to_string();
    assert!(patch.contains("remove") && patch.contains("/metadata/finalizers"), "{patch}");
}

#[tokio::test]
async fn without_a_backup_destination_the_default_policy_keeps_the_claims() {
    let (done, seen) = delete(
        deleting(json!({"size": 3}), json!({}), vec![]),
        vec![
            Exchange::new(Method::GET, format!("{CRD}/etcdbackups"), backups(vec![])),
            status_patch(),
            Exchange::new(Method::POST, EVENTS, event()),
            finalizer_removed(),
        ],
    )
    .await;
    assert!(done, "{seen:#?}");
    assert_eq!(final_condition(&seen[1])["reason"], "NoFinalBackup");
    assert!(seen.iter().all(|r| r.method != Method::DELETE), "no claim is touched");
}

/// A cluster an EtcdRestore of type Replace deletes keeps its claims under reclaimPolicy
/// Delete: the restored cluster starts on them, and its members keep the old data aside until
/// it runs. Before, the claims went with the cluster, so a restore that failed afterwards had
/// nothing left to fall back on.
#[tokio::test]
async fn a_cluster_replaced_by_a_restore_keeps_its_claims_under_reclaim_delete() {
    let spec = json!({"size": 3, "storage": {"reclaimPolicy": "Delete"}});
    let replaced = json!({"etcd.etcd.io/skip-final-backup": "replaced by EtcdRestore r",
                          "etcd.etcd.io/replaced-by": "r"});
    let (done, seen) = delete(
        deleting(spec, replaced, vec![]),
        vec![
            status_patch(),
            Exchange::new(Method::POST, EVENTS, event()),
            Exchange::new(Method::POST, EVENTS, event()),
            finalizer_removed(),
        ],
    )
    .await;
    assert!(done, "{seen:#?}");
    assert!(seen.iter().all(|r| !r.path.contains("persistentvolumeclaims")), "{seen:#?}");
    assert_eq!(seen[2].body["reason"], "VolumesKept");
    assert!(seen[2].body["note"].as_str().unwrap().contains("EtcdRestore r"), "{}", seen[2].body);
}
