//! Cost of one admission review in the handler alone (no HTTP, no TLS).
//! `cargo bench -p etcd-webhook`

use std::time::Instant;

use etcd_webhook::mutate::Kind;
use etcd_webhook::review::{Mode, review};

fn main() {
    let body = serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "b3b2", "kind": {"group": "etcd.etcd.io", "version": "v1alpha1", "kind": "EtcdCluster"},
            "resource": {"group": "etcd.etcd.io", "version": "v1alpha1", "resource": "etcdclusters"},
            "name": "demo", "namespace": "prod", "operation": "CREATE", "userInfo": {"username": "admin"},
            "object": {"apiVersion": "etcd.etcd.io/v1alpha1", "kind": "EtcdCluster", "metadata": {"name": "demo", "namespace": "prod"}, "spec": {"size": 3, "version": "v3.5.21"}},
            "dryRun": false
        }
    }))
    .unwrap();
    for mode in [Mode::Mutate, Mode::Validate] {
        let runs = 20_000;
        let start = Instant::now();
        for _ in 0..runs {
            std::hint::black_box(review(Kind::EtcdCluster, mode, &body).unwrap());
        }
        println!(
            "{mode:?}: {:.1} µs per review",
            start.elapsed().as_secs_f64() * 1e6 / runs as f64
        );
    }
}
