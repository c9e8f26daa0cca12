//! The Kubernetes member port's requests, in order, against a scripted API server: a member's
//! data claim is deleted before its pod, so that the StatefulSet never recreates the pod on the
//! claim being deleted (the pod could never start, and the claim never go).

use crate::support::apiserver::{Exchange, Recorded, serve};
use etcd_crds::EtcdCluster;
use etcd_operator::k8s::members::KubeMembers;
use etcd_operator::membership::MemberPort;
use http::Method;
use serde_json::{Value, json};

const NS: &str = "/api/v1/namespaces/prod";

fn cluster() -> EtcdCluster {
    serde_json::from_value(json!({
        "apiVersion": "etcd.etcd.io/v1alpha1", "kind": "EtcdCluster",
        "metadata": {"name": "demo", "namespace": "prod", "uid": "0b1c-uid"},
        "spec": {"size": 3, "version": "3.5.21"}
    }))
    .unwrap()
}

fn bootstrap(members: &[&str]) -> Value {
    let data: serde_json::Map<String, Value> = members
        .iter()
        .map(|m| {
            let entry = json!({"name": m, "initialCluster": [], "state": "Existing", "token": "t"});
            (format!("{m}.json"), Value::String(entry.to_string()))
        })
        .collect();
    let owner = json!({"apiVersion": "etcd.etcd.io/v1alpha1", "kind": "EtcdCluster", "name": "demo", "uid": "0b1c-uid", "controller": true});
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "demo-bootstrap", "ownerReferences": [owner]}, "data": data})
}

/// A pod of demo-1 whose etcd runs.
fn running_pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "demo-1"},
           "status": {"containerStatuses": [{"name": "etcd", "image": "etcd", "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {}}}]}})
}

fn claim() -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data-demo-1"}})
}

/// The script of a member's removal: its bootstrap entry goes, then `middle`, then its pod is
/// deleted.
fn removal(middle: [Exchange; 2]) -> Vec<Exchange> {
    let mut script = vec![
        Exchange::new(
            Method::GET,
            format!("{NS}/configmaps/demo-bootstrap"),
            bootstrap(&["demo-0", "demo-1"]),
        ),
        Exchange::new(
            Method::PATCH,
            format!("{NS}/configmaps/demo-bootstrap"),
            bootstrap(&["demo-0"]),
        ),
    ];
    script.extend(middle);
    script.push(Exchange::new(Method::DELETE, format!("{NS}/pods/demo-1"), running_pod()));
    script
}

fn delete_claim() -> Exchange {
    Exchange::new(Method::DELETE, format!("{NS}/persistentvolumeclaims/data-demo-1"), claim())
}

fn get_pod() -> Exchange {
    Exchange::new(Method::GET, format!("{NS}/pods/demo-1"), running_pod())
}

/// The claim was deleted, then the pod, and nothing else.
fn assert_claim_then_pod(seen: &[Recorded]) {
    let deletions: Vec<String> =
        seen.iter().filter(|r| r.method == Method::DELETE).map(|r| r.path.clone()).collect();
    assert_eq!(
        deletions,
        [format!("{NS}/persistentvolumeclaims/data-demo-1"), format!("{NS}/pods/demo-1")]
    );
}

#[tokio::test]
async fn a_wipe_deletes_the_claim_before_the_pod() {
    let (client, recorded) = serve(removal([delete_claim(), get_pod()]));
    KubeMembers { client, cluster: cluster(), claims: None }.wipe("demo-1").await.unwrap();
    assert_claim_then_pod(&recorded.await.unwrap());
}

#[tokio::test]
async fn fencing_a_running_member_deletes_its_claim_before_its_pod() {
    let (client, recorded) = serve(removal([get_pod(), delete_claim()]));
    KubeMembers { client, cluster: cluster(), claims: None }.fence("demo-1").await.unwrap();
    assert_claim_then_pod(&recorded.await.unwrap());
}
