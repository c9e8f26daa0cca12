//! The EtcdRestore reconcile through kube::Client against a scripted API server: a restore of
//! type New creates the cluster with `spec.restore` naming the backup's newest record; type
//! Replace keeps the old spec, deletes the cluster and its volumes, and brings it back under the
//! same name, one resumable step per reconcile.

use std::sync::Arc;

use crate::support::apiserver::{Exchange, Recorded, serve, status_body, unavailable};
use etcd_crds::EtcdRestore;
use etcd_operator::controller::Context;
use etcd_operator::controller::restore::{RESTORED_BY, reconcile};
use http::{Method, StatusCode};
use serde_json::{Value, json};

const CRD: &str = "/apis/etcd.etcd.io/v1alpha1/namespaces/prod";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/prod/events";

fn restore(spec: Value, status: Value) -> EtcdRestore {
    serde_json::from_value(json!({
        "apiVersion": "etcd.etcd.io/v1alpha1", "kind": "EtcdRestore",
        "metadata": {"name": "r", "namespace": "prod", "uid": "r-uid", "generation": 1},
        "spec": spec, "status": status
    }))
    .unwrap()
}

fn cluster(labels: Value, status: Value) -> Value {
    json!({
        "apiVersion": "etcd.etcd.io/v1alpha1", "kind": "EtcdCluster",
        "metadata": {"name": "main", "namespace": "prod", "labels": labels},
        "spec": {"size": 5, "version": "3.5.21"}, "status": status
    })
}

fn event() -> Value {
    json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}, "eventTime": "2026-11-24T00:00:00.000000Z"})
}

fn not_found() -> Value {
    status_body(404, "NotFound", "not found")
}

fn direct_location() -> Value {
    json!({"location": {"destination": {"volume": {"path": "/backups"}}, "key": "main.db.zst", "sha256": "ab"}})
}

fn patch_status() -> Exchange {
    let object = restore(
        json!({"clusterName": "main", "type": "New", "source": direct_location()}),
        json!({}),
    );
    Exchange::new(
        Method::PATCH,
        format!("{CRD}/etcdrestores/r/status"),
        serde_json::to_value(object).unwrap(),
    )
}

async fn run(object: &EtcdRestore, script: Vec<Exchange>) -> Vec<Recorded> {
    let (client, recorded) = serve(script);
    let ctx = Arc::new(Context::new(client, "op:1".into(), None));
    reconcile(Arc::new(object.clone()), ctx).await.unwrap();
    recorded.await.unwrap()
}

#[tokio::test]
async fn type_new_creates_the_cluster_from_the_backups_newest_record() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let backup = json!({
        "apiVersion": "etcd.etcd.io/v1alpha1", "kind": "EtcdBackup",
        "metadata": {"name": "nightly", "namespace": "prod"},
        "spec": {"clusterRef": {"name": "old"}, "retention": 3, "credentialsSecretRef": {"name": "s3-creds"},
                 "destination": {"s3": {"bucket": "b", "prefix": "team", "endpoint": "http://minio:9000", "forcePathStyle": true}}},
        "status": {"backups": [
            {"location": "s3://b/team/prod/nightly/old-20261124T030000Z.db.zst", "size": 10, "sha256": "newest", "revision": 7, "compression": "Zstd"},
            {"location": "s3://b/team/prod/nightly/old-20261124T020000Z.db.zst", "size": 9, "sha256": "older", "revision": 5, "compression": "Zstd"}
        ]}
    });
    let object = restore(
        json!({"clusterName": "main", "type": "New", "source": {"backupRef": {"name": "nightly"}},
               "clusterSpec": {"size": 3}}),
        json!({}),
    );
    let seen = run(
        &object,
        vec![
            Exchange::new(Method::GET, format!("{CRD}/etcdclusters/main"), not_found())
                .status(StatusCode::NOT_FOUND),
            Exchange::new(Method::GET, format!("{CRD}/etcdbackups/nightly"), backup),
            Exchange::new(
                Method::POST,
                format!("{CRD}/etcdclusters"),
                cluster(json!({}), json!({})),
            ),
            Exchange::new(Method::POST, EVENTS, event()),
            patch_status(),
        ],
    )
    .await;
    let created = &seen[2].body;
    assert_eq!(created["metadata"]["labels"][RESTORED_BY], "r");
    assert_eq!(created["spec"]["size"], 3);
    let source = &created["spec"]["restore"];
    assert_eq!(source["key"], "prod/nightly/old-20261124T030000Z.db.zst", "{source}");
    assert_eq!(source["sha256"], "newest");
    assert_eq!(source["credentialsSecretRef"]["name"], "s3-creds");
    assert_eq!(source["destination"]["s3"]["endpoint"], "http://minio:9000");
    let status = &seen[4].body["status"];
    assert_eq!(status["phase"], "Restoring");
    assert_eq!(status["restored"]["sha256"], "newest");
    assert!(status["startTime"].is_string());
}

#[tokio::test]
async fn the_restore_succeeds_when_its_cluster_runs() {
    let object = restore(
        json!({"clusterName": "main", "type": "New", "source": direct_location()}),
        json!({"phase": "Restoring"}),
    );
    let ours = cluster(json!({RESTORED_BY: "r"}), json!({"phase": "Running"}));
    let seen = run(
        &object,
        vec![Exchange::new(Method::GET, format!("{CRD}/etcdclusters/main"), ours), patch_status()],
    )
    .await;
    let status = &seen[1].body["status"];
    assert_eq!(status["phase"], "Succeeded");
    assert_eq!(status["conditions"][0]["reason"], "Restored");
    assert!(status["completionTime"].is_string());
}

#[tokio::test]
async fn type_new_never_touches_an_existing_cluster() {
    let object = restore(
        json!({"clusterName": "main", "type": "New", "source": direct_location()}),
        json!({}),
    );
    let theirs = cluster(json!({}), json!({"phase": "Running"}));
    let seen = run(
        &object,
        vec![
            Exchange::new(Method::GET, format!("{CRD}/etcdclusters/main"), theirs),
            Exchange::new(Method::POST, EVENTS, event()),
            patch_status(),
        ],
    )
    .await;
    assert_eq!(seen[1].body["type"], "Warning");
    let status = &seen[2].body["status"];
    assert_eq!(status["phase"], "Failed");
    assert_eq!(status["conditions"][0]["reason"], "ClusterExists");
    assert!(
        seen.iter()
            .all(|r| r.method != Method::DELETE && r.method != Method::POST || r.path == EVENTS)
    );
}

/// A snapshot the operator can read, in a directory of its own, and the location naming it.
fn stored_snapshot(dir: &std::path::Path) -> Value {
    let bytes = b"a snapshot, as far as its checksum goes";
    std::fs::write(dir.join("main.db.zst"), bytes).unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let sha256: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    json!({"location": {"destination": {"volume": {"path": dir.to_str().unwrap()}}, "key": "main.db.zst", "sha256": sha256}})
}

/// Before, a Replace from a snapshot that does not exist deleted the cluster and its volumes,
/// then failed to restore.
#[tokio::test]
async fn a_replace_from_a_snapshot_that_is_not_there_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = stored_snapshot(dir.path());
    source["location"]["key"] = json!("typo.db.zst");
    let spec = json!({"clusterName": "main", "type": "Replace", "source": source});
    let theirs = cluster(json!({}), json!({"phase": "Running"}));
    let seen = run(
        &restore(spec.clone(), json!({})),
        vec![
            Exchange::new(Method::GET, format!("{CRD}/etcdclusters/main"), theirs),
            Exchange::new(Method::POST, EVENTS, event()),
            patch_status(),
        ],
    )
    .await;
    let status = &seen.last().unwrap().body["status"];
    assert_eq!(status["phase"], "Failed", "{status}");
    let condition = &status["conditions"][0];
    assert_eq!(condition["reason"], "SnapshotUnusable");
    let message = condition["message"].as_str().unwrap();
    assert!(
        message.contains("nothing was deleted") && message.contains("typo.db.zst"),
        "{message}"
    );
    assert!(seen.iter().all(|r| r.method != Method::DELETE));
}

#[tokio::test]
async fn type_replace_keeps_the_spec_and_the_claims_deletes_the_cluster_then_recreates_it() {
    let dir = tempfile::tempdir().unwrap();
    let spec =
        json!({"clusterName": "main", "type": "Replace", "source": stored_snapshot(dir.path())});
    let theirs = || cluster(json!({}), json!({"phase": "Running"}));
    let status_of = |seen: &[Recorded]| seen.last().unwrap().body["status"].clone();

    // 1: the snapshot is read and checked, and the old spec kept, before anything is deleted.
    let seen = run(
        &restore(spec.clone(), json!({})),
        vec![
            Exchange::new(Method::GET, format!("{CRD}/etcdclusters/main"), theirs()),
            patch_status(),
        ],
    )
    .await;
    let status = status_of(&seen);
    assert_eq!(status["clusterSpec"]["size"], 5, "{status}");
    assert_eq!(status["phase"], "Restoring");

    // 2: the old cluster is deleted.
    let seen = run(
        &restore(spec.clone(), status.clone()),
        vec![
            Exchange::new(Method::GET, format!("{CRD}/etcdclusters/main"), theirs()),
            Exchange::new(Method::PATCH, format!("{CRD}/etcdclusters/main"), theirs()),
            Exchange::new(Method::DELETE, format!("{CRD}/etcdclusters/main"), theirs()),
            Exchange::new(Method::POST, EVENTS, event()),
            patch_status(),
        ],
    )
    .await;
    // Its data is replaced on purpose: no final backup holds the deletion up, and its claims
    // stay whatever reclaimPolicy says (the restored members set the old data aside).
    let annotations = &seen[1].body["metadata"]["annotations"];
    assert_eq!(annotations["etcd.etcd.io/skip-final-backup"], "replaced by EtcdRestore r");
    assert_eq!(annotations["etcd.etcd.io/replaced-by"], "r");
    let status = status_of(&seen);
    assert_eq!(status["conditions"][0]["reason"], "DeletingCluster");

    // 3: once it is gone, the cluster comes back under its name with the old spec, from the
    // snapshot, on the old claims: none is listed or deleted.
    let seen = run(
        &restore(spec.clone(), status.clone()),
        vec![
            Exchange::new(Method::GET, format!("{CRD}/etcdclusters/main"), not_found())
                .status(StatusCode::NOT_FOUND),
            Exchange::new(Method::POST, format!("{CRD}/etcdclusters"), theirs()),
            Exchange::new(Method::POST, EVENTS, event()),
            patch_status(),
        ],
    )
    .await;
    assert!(seen.iter().all(|r| !r.path.contains("persistentvolumeclaims")));
    let created = &seen[1].body;
    assert_eq!(created["metadata"]["name"], "main");
    assert_eq!(created["spec"]["size"], 5, "the replaced cluster's spec");
    assert_eq!(created["spec"]["restore"]["key"], "main.db.zst");
    assert_eq!(status_of(&seen)["conditions"][0]["reason"], "ClusterCreated");
}

#[tokio::test]
async fn an_api_server_hiccup_is_retried_never_a_failed_restore() {
    let object = restore(
        json!({"clusterName": "main", "type": "New", "source": direct_location()}),
        json!({"phase": "Restoring"}),
    );
    let (client, recorded) =
        serve(vec![unavailable(format!("{CRD}/etcdclusters/main")), patch_status()]);
    let ctx = Arc::new(Context::new(client, "op:1".into(), None));
    let action = reconcile(Arc::new(object), ctx).await.unwrap();
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(10)),
        "tried again"
    );
    let seen = recorded.await.unwrap();
    assert_eq!(seen.len(), 2, "no Warning Event for a hiccup");
    let status = &seen[1].body["status"];
    assert_eq!(status["phase"], "Restoring", "the phase stays: {status}");
    assert_eq!(status["conditions"][0]["reason"], "ClusterUnavailable");
    assert!(status["conditions"][0]["message"].as_str().unwrap().contains("trying again"));
}
