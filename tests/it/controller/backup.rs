//! The EtcdBackup reconcile through kube::Client against a scripted API server, with a real
//! etcd (mutual TLS, the client certificate read from the cluster's Secret) and a real volume
//! destination: the exact requests, the status it writes, the Events, and the schedule driven by
//! the test's clock.

use crate::support::apiserver::{Exchange, serve, status_body, unavailable};
use crate::support::etcd::{issue_pki, start_tls_cluster};
use base64::Engine;
use etcd_crds::EtcdBackup;
use etcd_operator::controller::Context;
use etcd_operator::controller::backup::reconcile_at;
use http::{Method, StatusCode};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

const CRD: &str = "/apis/etcd.etcd.io/v1alpha1/namespaces/prod";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/prod/events";

fn backup(spec: Value, status: Value) -> EtcdBackup {
    serde_json::from_value(json!({
        "apiVersion": "etcd.etcd.io/v1alpha1", "kind": "EtcdBackup",
        "metadata": {"name": "nightly", "namespace": "prod", "uid": "b-uid", "generation": 2,
                     "creationTimestamp": "2026-11-24T00:00:00Z"},
        "spec": spec, "status": status
    }))
    .unwrap()
}

fn volume_spec(dir: &std::path::Path, schedule: Option<&str>) -> Value {
    let mut spec = json!({
        "clusterRef": {"name": "main"},
        "destination": {"volume": {"path": dir.to_str().unwrap()}},
        "retention": 2
    });
    if let Some(schedule) = schedule {
        spec["schedule"] = json!(schedule);
    }
    spec
}

fn event() -> Value {
    json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}, "eventTime": "2026-11-24T00:00:00.000000Z"})
}

/// The status patch of `object`, answered with the object.
fn status_patch(object: &EtcdBackup) -> Exchange {
    Exchange::new(
        Method::PATCH,
        format!("{CRD}/etcdbackups/nightly/status"),
        serde_json::to_value(object).unwrap(),
    )
}

fn b64(path: &std::path::Path) -> String {
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_one_shot_backup_reads_the_cluster_and_its_secret_stores_a_snapshot_and_reports_it() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let work = tempfile::tempdir().unwrap();
    let pki = work.path().join("pki");
    issue_pki(&pki, "main");
    let etcd = start_tls_cluster(1, &pki, work.path());
    let cluster = json!({
        "apiVersion": "etcd.etcd.io/v1alpha1", "kind": "EtcdCluster",
        "metadata": {"name": "main", "namespace": "prod"},
        "spec": {"size": 1},
        "status": {"clientEndpoints": etcd.client_urls()}
    });
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "main-client-tls", "namespace": "prod"},
        "data": {"tls.crt": b64(&pki.join("client.crt")), "tls.key": b64(&pki.join("client.key")),
                 "ca.crt": b64(&pki.join("ca.crt"))}
    });
    let dir = work.path().join("backups");
    let object = backup(volume_spec(&dir, None), json!({}));
    let (client, recorded) = serve(vec![
        Exchange::new(Method::GET, format!("{CRD}/etcdclusters/main"), cluster),
        Exchange::new(Method::GET, "/api/v1/namespaces/prod/secrets/main-client-tls", secret),
        status_patch(&object),
        Exchange::new(Method::POST, EVENTS, event()),
    ]);
    let ctx = Context::new(client, "op:1".into(), None);
    let now: Timestamp = "2026-11-24T03:00:00Z".parse().unwrap();
    let action = reconcile_at(&object, &ctx, now).await.unwrap();
    let seen = recorded.await.unwrap();
    assert_eq!(action, kube::runtime::controller::Action::await_change(), "{}", seen[2].body);

    let status = &seen[2].body["status"];
    assert_eq!(status["phase"], "Succeeded", "{status}");
    assert_eq!(status["lastSuccessfulTime"], "2026-11-24T03:00:00Z");
    assert_eq!(status["consecutiveFailures"], 0);
    let record = &status["backups"][0];
    assert_eq!(record["sha256"].as_str().unwrap().len(), 64, "{record}");
    let stored = dir.join("prod/nightly/main-20261124T030000Z.db.zst");
    assert_eq!(record["location"], format!("file://{}", stored.display()));
    assert_eq!(record["size"].as_u64().unwrap(), std::fs::metadata(&stored).unwrap().len());
    assert_eq!(status["conditions"][0]["reason"], "BackupSucceeded");
    let note = seen[3].body["note"].as_str().unwrap();
    assert!(note.contains(record["sha256"].as_str().unwrap()), "{note}");
    assert_eq!(seen[3].body["reason"], "BackupSucceeded");
}

#[tokio::test]
async fn a_missing_cluster_is_a_condition_an_event_and_a_retry_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let object = backup(volume_spec(dir.path(), None), json!({"consecutiveFailures": 1}));
    let (client, recorded) = serve(vec![
        Exchange::new(
            Method::GET,
            format!("{CRD}/etcdclusters/main"),
            status_body(404, "NotFound", "etcdclusters \"main\" not found"),
        )
        .status(StatusCode::NOT_FOUND),
        status_patch(&object),
        Exchange::new(Method::POST, EVENTS, event()),
    ]);
    let ctx = Context::new(client, "op:1".into(), None);
    let action = reconcile_at(&object, &ctx, Timestamp::now()).await.unwrap();
    let seen = recorded.await.unwrap();
    let status = &seen[1].body["status"];
    assert_eq!(status["phase"], "Failed");
    assert_eq!(status["consecutiveFailures"], 2);
    assert_eq!(status["conditions"][0]["status"], "False");
    assert_eq!(status["conditions"][0]["reason"], "ClusterNotFound");
    assert!(status["conditions"][0]["message"].as_str().unwrap().contains("EtcdCluster main"));
    assert_eq!(seen[2].body["type"], "Warning");
    // The second failure in a row waits twice the first.
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(20))
    );
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "nothing stored");
}

#[tokio::test]
async fn an_api_server_hiccup_is_retried_and_never_counted_as_a_failed_backup() {
    let dir = tempfile::tempdir().unwrap();
    let object = backup(
        volume_spec(dir.path(), Some("0 * * * *")),
        json!({"phase": "Scheduled", "consecutiveFailures": 1}),
    );
    let (client, recorded) =
        serve(vec![unavailable(format!("{CRD}/etcdclusters/main")), status_patch(&object)]);
    let ctx = Context::new(client, "op:1".into(), None);
    let now: Timestamp = "2026-11-24T01:00:30Z".parse().unwrap();
    let action = reconcile_at(&object, &ctx, now).await.unwrap();
    let seen = recorded.await.unwrap();
    assert_eq!(seen.len(), 2, "no Warning Event for a hiccup");
    let status = &seen[1].body["status"];
    assert_eq!(status["phase"], "Scheduled", "the phase stays: {status}");
    assert_eq!(status["consecutiveFailures"], 1, "no run happened: {status}");
    assert_eq!(status["conditions"][0]["reason"], "ClusterUnavailable");
    assert!(status["conditions"][0]["message"].as_str().unwrap().contains("trying again"));
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(10))
    );
}

#[tokio::test]
async fn a_schedule_not_yet_due_only_says_when_it_will_run() {
    let dir = tempfile::tempdir().unwrap();
    let object = backup(volume_spec(dir.path(), Some("0 * * * *")), json!({}));
    let (client, recorded) = serve(vec![status_patch(&object)]);
    let ctx = Context::new(client, "op:1".into(), None);
    // Created at 00:00; at 00:35 the first run (01:00) is 25 minutes away.
    let now: Timestamp = "2026-11-24T00:35:00Z".parse().unwrap();
    let action = reconcile_at(&object, &ctx, now).await.unwrap();
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(25 * 60))
    );
    let seen = recorded.await.unwrap();
    assert_eq!(seen[0].body["status"]["phase"], "Scheduled");
}

#[tokio::test]
async fn an_invalid_schedule_is_refused_with_its_text() {
    let dir = tempfile::tempdir().unwrap();
    let object = backup(volume_spec(dir.path(), Some("at noon")), json!({}));
    let (client, recorded) = serve(vec![status_patch(&object)]);
    let ctx = Context::new(client, "op:1".into(), None);
    reconcile_at(&object, &ctx, Timestamp::now()).await.unwrap();
    let seen = recorded.await.unwrap();
    let condition = &seen[0].body["status"]["conditions"][0];
    assert_eq!(condition["reason"], "InvalidSchedule");
    assert!(condition["message"].as_str().unwrap().contains("at noon"), "{condition}");
}
