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

/// `spec` with defaults filled and values normalised, or why it cannot be read. An absent spec
/// is `{}`.
pub fn defaulted_spec(kind: Kind, spec: Option<&Value>) -> Result<Value, String> {
    let empty = Value::Object(Default::default());
    let spec = spec.unwrap_or(&empty);
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
    spec: &Value,
    normalise: impl FnOnce(&mut T),
) -> Result<Value, String> {
    let mut typed = T::deserialize(spec).map_err(|err| format!("spec: {err}"))?;
    normalise(&mut typed);
    serde_json::to_value(&typed).map_err(|err| format!("spec: {err}"))
}

/// The normal form of a cluster spec's free-text fields (what `local` applies to its file too).
pub fn normalise_cluster(spec: &mut EtcdClusterSpec) {
    spec.version = EtcdVersion::normalise(&spec.version).to_owned();
    spec.repository = spec.repository.trim().to_owned();
}

/// The JSON Patch that turns `object` into its defaulted form; `None` when nothing changes.
pub fn patch(kind: Kind, object: &Value) -> Result<Option<json_patch::Patch>, String> {
    if !object.is_object() {
        return Err("object: must be a JSON object".to_owned());
    }
    spec_patch(kind, object.get("spec"))
}

/// The JSON Patch that turns an object's `spec` into its defaulted form; `None` when nothing
/// changes. One operation sets the whole spec: the defaulted spec is the API type written out, and
/// the type is the CRD's schema (crds/ is generated from it), so nothing the user wrote that the
/// API server keeps is lost, and no field-by-field diff has to be computed on every request.
/// Metadata, which the API server fills with managed fields and can be large, is never touched.
pub fn spec_patch(kind: Kind, spec: Option<&Value>) -> Result<Option<json_patch::Patch>, String> {
    let defaulted = defaulted_spec(kind, spec)?;
    if spec == Some(&defaulted) {
        return Ok(None);
    }
    // `add` of a member that exists replaces it (RFC 6902 §4.1), so this covers an absent spec too.
    let set = json_patch::AddOperation {
        path: json_patch::jsonptr::PointerBuf::from_tokens(["spec"]),
        value: defaulted,
    };
    Ok(Some(json_patch::Patch(vec![json_patch::PatchOperation::Add(set)])))
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
    fn fills_every_default_and_normalises_in_one_operation() {
        let object = json!({"apiVersion": "etcd.etcd.io/v1alpha1", "kind": "EtcdCluster", "metadata": {"name": "a"}, "spec": {"version": " v3.5.21 "}});
        let patch = patch(Kind::EtcdCluster, &object).unwrap().unwrap();
        let out = apply(&object, &patch);
        assert_eq!(out["spec"]["version"], "3.5.21");
        assert_eq!(out["spec"]["size"], 3);
        assert_eq!(out["spec"]["security"]["tls"]["autoTLS"], true);
        assert_eq!(out["metadata"], object["metadata"], "only spec is touched");
        let ops = serde_json::to_value(&patch).unwrap();
        assert_eq!(ops.as_array().unwrap().len(), 1, "{ops}");
        assert_eq!(ops[0]["path"], "/spec");
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
