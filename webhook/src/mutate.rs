//! Defaulting and normalisation, answered as a JSON Patch over `/spec`.
//!
//! Defaults come from the API types (serde fills absent fields from `etcd_crds::defaults`, the same
//! values the CRD schema declares), so defaulting is: read the spec's text into its type,
//! normalise, and write the type back out as text, which becomes the patch's value. No
//! `serde_json::Value` is built on the way: building one (a map of owned keys per object) cost
//! more than reading and writing the type.

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

/// Appends `spec` (JSON text; an absent spec is `{}`) with defaults filled and values
/// normalised, as compact JSON text, to `out`; or says why it cannot be read.
fn write_defaulted(kind: Kind, spec: &str, out: &mut Vec<u8>) -> Result<(), String> {
    match kind {
        Kind::EtcdCluster => round_trip::<EtcdClusterSpec>(spec, out, normalise_cluster),
        Kind::EtcdBackup => round_trip::<EtcdBackupSpec>(spec, out, |backup| {
            if let Some(schedule) = &mut backup.schedule {
                *schedule = schedule.trim().to_owned();
            }
        }),
        Kind::EtcdRestore => round_trip::<EtcdRestoreSpec>(spec, out, |restore| {
            if let Some(cluster) = &mut restore.cluster_spec {
                normalise_cluster(cluster);
            }
        }),
    }
}

fn round_trip<T: DeserializeOwned + Serialize>(
    spec: &str,
    out: &mut Vec<u8>,
    normalise: impl FnOnce(&mut T),
) -> Result<(), String> {
    let mut typed: T = serde_json::from_str(spec).map_err(|err| format!("spec: {err}"))?;
    normalise(&mut typed);
    serde_json::to_writer(out, &typed).map_err(|err| format!("spec: {err}"))
}

/// The normal form of a cluster spec's free-text fields (what `local` applies to its file too).
pub fn normalise_cluster(spec: &mut EtcdClusterSpec) {
    spec.version = EtcdVersion::normalise(&spec.version).to_owned();
    spec.repository = spec.repository.trim().to_owned();
}

/// The JSON Patch, as JSON text, that turns an object's `spec` (its JSON text, `None` when the
/// object has none) into its defaulted form; `None` when nothing changes.
///
/// One operation sets the whole spec: the defaulted spec is the API type written out, and the
/// type is the CRD's schema (crds/ is generated from it), so nothing the user wrote that the API
/// server keeps is lost, and no field-by-field diff has to be computed on every request. Metadata,
/// which the API server fills with managed fields and can be large, is never touched.
pub fn spec_patch(kind: Kind, spec: Option<&str>) -> Result<Option<Vec<u8>>, String> {
    // `add` of a member that exists replaces it (RFC 6902 §4.1), so this covers an absent spec too.
    const OPEN: &[u8] = br#"[{"op":"add","path":"/spec","value":"#;
    // The defaulted spec is written into the patch where it belongs, in a buffer that holds a
    // spec with every default (about 500 bytes) without growing.
    let mut patch = Vec::with_capacity(1024 + spec.map_or(0, str::len));
    patch.extend_from_slice(OPEN);
    write_defaulted(kind, spec.unwrap_or("{}"), &mut patch)?;
    if spec.is_some_and(|spec| already(spec, &patch[OPEN.len()..])) {
        return Ok(None);
    }
    patch.extend_from_slice(b"}]");
    Ok(Some(patch))
}

/// Whether `spec` is, as JSON, the same as its `defaulted` form.
///
/// A spec whose text is shorter is not compared: the defaulted text is serde_json's compact form,
/// and no JSON text of the same value is shorter than that (strings escape only what JSON
/// requires, integers have no other spelling, and the API types hold no floats). The one way
/// this can err is towards a patch that changes nothing, which is harmless. It spares the
/// common case — a create that leaves fields out — the cost of reading both texts as JSON values.
fn already(spec: &str, defaulted: &[u8]) -> bool {
    if spec.len() < defaulted.len() {
        return false;
    }
    let value = |text: &[u8]| serde_json::from_slice::<Value>(text).ok();
    matches!((value(spec.as_bytes()), value(defaulted)), (Some(a), Some(b)) if a == b)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The object with `spec_patch` applied, and the patch.
    fn mutate(kind: Kind, object: &Value) -> (Value, Option<Value>) {
        let spec = object.get("spec").map(Value::to_string);
        let patch = spec_patch(kind, spec.as_deref()).unwrap();
        let Some(patch) = patch else { return (object.clone(), None) };
        let ops: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
        let mut out = object.clone();
        json_patch::patch(&mut out, &ops).unwrap();
        (out, Some(serde_json::from_slice(&patch).unwrap()))
    }

    #[test]
    fn fills_every_default_and_normalises_in_one_operation() {
        let object = json!({"apiVersion": "etcd.etcd.io/v1alpha1", "kind": "EtcdCluster", "metadata": {"name": "a"}, "spec": {"version": " v3.5.21 "}});
        let (out, patch) = mutate(Kind::EtcdCluster, &object);
        assert_eq!(out["spec"]["version"], "3.5.21");
        assert_eq!(out["spec"]["size"], 3);
        assert_eq!(out["spec"]["security"]["tls"]["autoTLS"], true);
        assert_eq!(out["metadata"], object["metadata"], "only spec is touched");
        let ops = patch.unwrap();
        assert_eq!(ops.as_array().unwrap().len(), 1, "{ops}");
        assert_eq!(ops[0]["path"], "/spec");
        assert_eq!(mutate(Kind::EtcdCluster, &out).1, None, "a second pass changes nothing");
    }

    #[test]
    fn a_defaulted_spec_in_another_key_order_and_spacing_needs_no_patch() {
        let (out, _) = mutate(Kind::EtcdCluster, &json!({"spec": {}}));
        // As kube-apiserver would send it back: keys sorted (a Go map), spaces after colons.
        let text = serde_json::to_string_pretty(&out["spec"]).unwrap();
        assert_eq!(spec_patch(Kind::EtcdCluster, Some(&text)).unwrap(), None, "{text}");
    }

    #[test]
    fn a_missing_spec_is_added_whole() {
        let (out, _) = mutate(Kind::EtcdCluster, &json!({"metadata": {"name": "a"}}));
        assert_eq!(out["spec"]["size"], 3);
    }

    #[test]
    fn an_unreadable_spec_says_why() {
        let err = spec_patch(Kind::EtcdCluster, Some(r#"{"size": "three"}"#)).unwrap_err();
        assert!(err.starts_with("spec: invalid type"), "{err}");
        let err = spec_patch(Kind::EtcdBackup, Some("{}")).unwrap_err();
        assert!(err.contains("clusterRef"), "{err}");
    }
}
