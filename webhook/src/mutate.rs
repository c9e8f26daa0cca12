//! Defaulting and normalisation, answered as a minimal JSON Patch over `/spec`.
//!
//! Defaults come from the API types (serde fills absent fields from `etcd_crds::defaults`, the same
//! values the CRD schema declares), so defaulting is: read the spec into its type, normalise,
//! write it back, and diff.

use etcd_crds::{EtcdBackupSpec, EtcdClusterSpec, EtcdRestoreSpec, EtcdVersion};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The kinds this webhook defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    EtcdCluster,
    EtcdBackup,
    EtcdRestore,
}

/// The spec of `object` with defaults filled and values normalised, or why it cannot be read.
pub fn defaulted_spec(kind: Kind, object: &Value) -> Result<Value, String> {
    let spec = object.get("spec").cloned().unwrap_or_else(|| Value::Object(Default::default()));
    match kind {
        Kind::EtcdCluster => round_trip::<EtcdClusterSpec>(spec, normalise_cluster),
        Kind::EtcdBackup => round_trip::<EtcdBackupSpec>(spec, |backup| {
            if let Some(schedule) = &mut backup.schedule {
                *schedule = schedule.trim().to_owned();
            }
        }),
        Kind::EtcdRestore => round_trip::<EtcdRestoreSpec>(spec, |restore| {
            if let Some(cluster) = &mut restore.cluster_spec {
                normalise_cluster(cluster);
            }
        }),
    }
}

fn round_trip<T: DeserializeOwned + Serialize>(
    spec: Value,
    normalise: impl FnOnce(&mut T),
) -> Result<Value, String> {
    let mut typed: T = serde_json::from_value(spec).map_err(|err| format!("spec: {err}"))?;
    normalise(&mut typed);
    serde_json::to_value(&typed).map_err(|err| format!("spec: {err}"))
}

fn normalise_cluster(spec: &mut EtcdClusterSpec) {
    spec.version = EtcdVersion::normalise(&spec.version).to_owned();
    spec.repository = spec.repository.trim().to_owned();
}

/// The JSON Patch that turns `object` into its defaulted form; `None` when nothing changes.
/// Only the spec is compared (wrapped so that paths start with `/spec`): metadata, which the API
/// server fills with managed fields and can be large, is never copied or walked.
pub fn patch(kind: Kind, object: &Value) -> Result<Option<json_patch::Patch>, String> {
    if !object.is_object() {
        return Err("object: must be a JSON object".to_owned());
    }
    let defaulted = defaulted_spec(kind, object)?;
    let before = match object.get("spec") {
        Some(spec) => serde_json::json!({ "spec": spec }),
        None => serde_json::json!({}),
    };
    let patch = json_patch::diff(&before, &serde_json::json!({ "spec": defaulted }));
    Ok((!patch.0.is_empty()).then_some(patch))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn apply(object: &Value, patch: &json_patch::Patch) -> Value {
        let mut out = object.clone();
        json_patch::patch(&mut out, patch).unwrap();
        out
    }

    #[test]
    fn fills_every_default_and_normalises() {
        let object = json!({"apiVersion": "etcd.etcd.io/v1alpha1", "kind": "EtcdCluster", "metadata": {"name": "a"}, "spec": {"version": " v3.5.21 "}});
        let patch = patch(Kind::EtcdCluster, &object).unwrap().unwrap();
        let out = apply(&object, &patch);
        assert_eq!(out["spec"]["version"], "3.5.21");
        assert_eq!(out["spec"]["size"], 3);
        assert_eq!(out["spec"]["security"]["tls"]["autoTLS"], true);
        assert_eq!(out["metadata"], object["metadata"], "only spec is touched");
        for op in serde_json::to_value(&patch).unwrap().as_array().unwrap() {
            assert!(op["path"].as_str().unwrap().starts_with("/spec/"), "{op}");
        }
        assert_eq!(
            super::patch(Kind::EtcdCluster, &out).unwrap(),
            None,
            "a second pass changes nothing"
        );
    }

    #[test]
    fn a_missing_spec_is_added_whole() {
        let object = json!({"metadata": {"name": "a"}});
        let out = apply(&object, &patch(Kind::EtcdCluster, &object).unwrap().unwrap());
        assert_eq!(out["spec"]["size"], 3);
    }

    #[test]
    fn an_unreadable_spec_says_why() {
        let err = patch(Kind::EtcdCluster, &json!({"spec": {"size": "three"}})).unwrap_err();
        assert!(err.starts_with("spec: invalid type"), "{err}");
        let err = patch(Kind::EtcdBackup, &json!({"spec": {}})).unwrap_err();
        assert!(err.contains("clusterRef"), "{err}");
    }
}
