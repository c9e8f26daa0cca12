//! Cost of one admission review in the handler alone (no HTTP, no TLS): the request read, the
//! answer built and encoded.
//! `cargo bench -p etcd-webhook`

use std::time::Instant;

use etcd_webhook::mutate::Kind;
use etcd_webhook::review::{Mode, review};

/// Metadata as kube-apiserver sends it on an update through `kubectl apply`: labels,
/// annotations (the last applied configuration) and managed fields.
fn metadata() -> serde_json::Value {
    let applied = serde_json::json!({"apiVersion": "etcd.etcd.io/v1alpha1", "kind": "EtcdCluster", "metadata": {"name": "demo", "namespace": "prod"}, "spec": {"size": 3, "version": "v3.5.21"}}).to_string();
    let fields: serde_json::Map<String, serde_json::Value> = (0..40)
        .map(|i| (format!("f:field{i}"), serde_json::json!({".": {}, "f:inner": {}})))
        .collect();
    serde_json::json!({
        "name": "demo", "namespace": "prod", "uid": "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
        "resourceVersion": "123456", "generation": 4, "creationTimestamp": "2026-11-24T00:00:00Z",
        "labels": {"app.kubernetes.io/name": "etcd", "team": "platform"},
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": applied},
        "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update",
                           "apiVersion": "etcd.etcd.io/v1alpha1", "time": "2026-11-24T00:00:00Z",
                           "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": fields}}]
    })
}

fn body(metadata: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "b3b2", "kind": {"group": "etcd.etcd.io", "version": "v1alpha1", "kind": "EtcdCluster"},
            "resource": {"group": "etcd.etcd.io", "version": "v1alpha1", "resource": "etcdclusters"},
            "name": "demo", "namespace": "prod", "operation": "CREATE", "userInfo": {"username": "admin"},
            "object": {"apiVersion": "etcd.etcd.io/v1alpha1", "kind": "EtcdCluster", "metadata": metadata, "spec": {"size": 3, "version": "v3.5.21"}},
            "dryRun": false
        }
    }))
    .unwrap()
}

fn main() {
    let bodies = [
        ("kubectl apply (managed fields)", body(metadata())),
        ("name and namespace only", body(serde_json::json!({"name": "demo", "namespace": "prod"}))),
    ];
    for (what, body) in bodies {
        for mode in [Mode::Mutate, Mode::Validate] {
            let runs = 20_000;
            let start = Instant::now();
            for _ in 0..runs {
                let (answer, _) = review(Kind::EtcdCluster, mode, &body).unwrap();
                std::hint::black_box(answer.to_json());
            }
            println!(
                "{mode:?}, {what}, {} bytes: {:.1} µs per review, answer encoded",
                body.len(),
                start.elapsed().as_secs_f64() * 1e6 / runs as f64
            );
        }
    }
}
