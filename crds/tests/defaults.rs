//! One source of truth for defaults: what serde fills into an empty spec is exactly what the CRD
//! schema declares, so a cluster looks the same whether the webhook or the API server defaulted it.

use etcd_crds::{EtcdBackupSpec, EtcdClusterSpec};
use kube::CustomResourceExt;
use serde_json::{Value, json};

/// Applies the schema's `default`s to `value` the way the API server does: recursively, for
/// absent properties of present objects.
fn apply_schema_defaults(schema: &Value, value: &mut Value) {
    let (Some(properties), Some(object)) =
        (schema.get("properties").and_then(Value::as_object), value.as_object_mut())
    else {
        return;
    };
    for (name, property) in properties {
        if !object.contains_key(name)
            && let Some(default) = property.get("default")
        {
            object.insert(name.clone(), default.clone());
        }
        if let Some(child) = object.get_mut(name) {
            apply_schema_defaults(property, child);
        }
    }
}

fn spec_schema(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Value {
    let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
    schema["openAPIV3Schema"]["properties"]["spec"].clone()
}

#[test]
fn empty_cluster_spec_defaults_agree_between_serde_and_schema() {
    let by_serde =
        serde_json::to_value(serde_json::from_value::<EtcdClusterSpec>(json!({})).unwrap())
            .unwrap();
    let mut by_schema = json!({});
    apply_schema_defaults(&spec_schema(&etcd_crds::EtcdCluster::crd()), &mut by_schema);
    assert_eq!(by_serde, by_schema);
    assert_eq!(by_serde["size"], 3);
    assert_eq!(by_serde["version"], etcd_crds::defaults::VERSION);
    assert_eq!(by_serde["security"]["tls"], json!({"enabled": true, "autoTLS": true}));
    assert_eq!(by_serde["storage"]["reclaimPolicy"], "Retain");
}

#[test]
fn partial_cluster_spec_keeps_what_the_user_set() {
    let spec: EtcdClusterSpec = serde_json::from_value(json!({
        "size": 5,
        "storage": {"size": "20Gi", "storageClassName": "fast"},
        "options": {"extraArgs": {"snapshot-count": "5000"}}
    }))
    .unwrap();
    assert_eq!(spec.size, 5);
    assert_eq!(spec.storage.size.0, "20Gi");
    assert_eq!(spec.storage.storage_class_name.as_deref(), Some("fast"));
    assert!(!spec.storage.ephemeral);
    assert_eq!(spec.options.quota_backend_bytes, etcd_crds::defaults::quota_backend_bytes());
    assert_eq!(spec.options.extra_args["snapshot-count"], "5000");
}

#[test]
fn backup_spec_defaults_agree_between_serde_and_schema() {
    let minimal =
        json!({"clusterRef": {"name": "demo"}, "destination": {"volume": {"path": "/backups"}}});
    let by_serde =
        serde_json::to_value(serde_json::from_value::<EtcdBackupSpec>(minimal.clone()).unwrap())
            .unwrap();
    let mut by_schema = minimal;
    apply_schema_defaults(&spec_schema(&etcd_crds::EtcdBackup::crd()), &mut by_schema);
    assert_eq!(by_serde, by_schema);
    assert_eq!(by_serde["retention"], 5);
    assert_eq!(by_serde["compression"], "Zstd");
}

#[test]
fn every_pod_template_override_is_written_out() {
    // A spec's podTemplate is left out when nothing in it is set: any one field keeps it.
    let fields = [
        json!({"labels": {"a": "b"}}),
        json!({"annotations": {"a": "b"}}),
        json!({"affinity": {}}),
        json!({"tolerations": [{"key": "k", "operator": "Exists"}]}),
        json!({"nodeSelector": {"disk": "ssd"}}),
        json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}]}),
        json!({"priorityClassName": ""}),
    ];
    for field in fields {
        let spec: EtcdClusterSpec =
            serde_json::from_value(json!({"podTemplate": field.clone()})).unwrap();
        assert_eq!(serde_json::to_value(&spec).unwrap()["podTemplate"], field);
    }
    let spec: EtcdClusterSpec = serde_json::from_value(json!({"podTemplate": {}})).unwrap();
    assert_eq!(serde_json::to_value(&spec).unwrap().get("podTemplate"), None);
}
