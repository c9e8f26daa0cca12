//! Where backups live, shared by `EtcdBackup` (writes there) and `EtcdRestore` (reads from there).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Exactly one object-storage backend.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "[has(self.s3), has(self.gcs), has(self.azure), has(self.volume)].filter(x, x).size() == 1",
     "message": "exactly one of s3, gcs, azure, volume must be set"}
]))]
pub struct BackupDestination {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Destination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcs: Option<GcsDestination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureDestination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeDestination>,
}

impl BackupDestination {
    /// Names of the backends that are set, in a fixed order; a valid destination has exactly one.
    pub fn backends(&self) -> Vec<&'static str> {
        [
            (self.s3.is_some(), "s3"),
            (self.gcs.is_some(), "gcs"),
            (self.azure.is_some(), "azure"),
            (self.volume.is_some(), "volume"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect()
    }

    /// Whether the backend needs credentials from a Secret (a volume does not).
    pub fn needs_credentials(&self) -> bool {
        self.s3.is_some() || self.gcs.is_some() || self.azure.is_some()
    }

    /// Where the objects of the EtcdBackup `namespace/name` live, as one path whose prefixes are
    /// the places that hold them: the store (backend and endpoint or account), the bucket or
    /// container, the prefix, then the backup's own `NAMESPACE/NAME/`. Two backups share objects
    /// when one's root is a prefix of the other's. `None` without exactly one backend.
    pub fn objects_root(&self, namespace: &str, name: &str) -> Option<String> {
        let (store, prefix) = match (&self.s3, &self.gcs, &self.azure, &self.volume) {
            (Some(s3), None, None, None) => {
                let endpoint = s3.endpoint.as_deref().unwrap_or("aws");
                let endpoint = endpoint.trim_end_matches('/').to_ascii_lowercase();
                (format!("s3 {endpoint}/{}", s3.bucket), s3.prefix.as_str())
            }
            (None, Some(gcs), None, None) => (format!("gcs /{}", gcs.bucket), gcs.prefix.as_str()),
            (None, None, Some(azure), None) => {
                let account = azure.storage_account.to_ascii_lowercase();
                (format!("azure {account}/{}", azure.container), azure.prefix.as_str())
            }
            (None, None, None, Some(volume)) => ("volume ".to_owned(), volume.path.as_str()),
            _ => return None,
        };
        let segments = prefix.split('/').chain([namespace, name]).filter(|s| !s.is_empty());
        Some(segments.fold(store, |path, segment| format!("{path}/{segment}")) + "/")
    }
}

/// S3 or an S3-compatible service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Destination {
    #[schemars(length(min = 1))]
    pub bucket: String,
    /// Key prefix of every object, e.g. `prod/etcd-main/`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// Endpoint of an S3-compatible service; empty means AWS. For an EtcdBackup it must be HTTPS
    /// to an address outside the cluster, unless the operator's administrator allows its host
    /// (`--backup-endpoint-allow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), which most S3-compatible services need.
    #[serde(default)]
    pub force_path_style: bool,
}

/// Google Cloud Storage.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcsDestination {
    #[schemars(length(min = 1))]
    pub bucket: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
}

/// Azure Blob Storage.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureDestination {
    #[schemars(length(min = 1))]
    pub storage_account: String,
    #[schemars(length(min = 1))]
    pub container: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
}

/// A directory on a volume mounted into the operator's pod.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeDestination {
    #[schemars(length(min = 1))]
    pub path: String,
}

/// Snapshot compression.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Compression {
    None,
    Gzip,
    #[default]
    Zstd,
}

/// A key in a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyReference {
    #[schemars(length(min = 1))]
    pub name: String,
    #[schemars(length(min = 1))]
    pub key: String,
}

/// Client-side encryption of snapshots, with a key kept in a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionSpec {
    /// A 32-byte key (raw or base64) for AES-256-GCM.
    pub key_secret_ref: SecretKeyReference,
}

/// One stored snapshot: enough to find it again and to prove it is the one that was written.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    /// Where the object is, as a URL (`s3://bucket/key`, `file:///path`).
    pub location: String,
    /// Bytes stored (after compression and encryption).
    pub size: i64,
    /// SHA-256 of the stored bytes, hexadecimal.
    pub sha256: String,
    /// etcd revision the snapshot was taken at.
    pub revision: i64,
    #[serde(default, rename = "clusterID", skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    #[serde(default)]
    pub compression: Compression,
    #[serde(default)]
    pub encrypted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// When the stored object was read back, its checksum checked and the snapshot restored
    /// into a scratch directory; absent: never verified. Retention counts verified backups only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_time: Option<Time>,
    /// Keys in the snapshot's backend (every revision kept), as the verifying restore counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_count: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(bucket: &str, prefix: &str) -> BackupDestination {
        let s3 =
            S3Destination { bucket: bucket.into(), prefix: prefix.into(), ..Default::default() };
        BackupDestination { s3: Some(s3), ..Default::default() }
    }

    #[test]
    fn a_backup_whose_prefix_lies_in_anothers_directory_has_a_root_inside_it() {
        let a = s3("b", "etcd/").objects_root("team-a", "nightly").unwrap();
        assert_eq!(a, "s3 aws/b/etcd/team-a/nightly/");
        let inside = s3("b", "/etcd//team-a/nightly").objects_root("team-b", "x").unwrap();
        assert!(inside.starts_with(&a), "{inside}");
        let beside = s3("b", "etcd").objects_root("team-a", "nightly-2").unwrap();
        assert!(!beside.starts_with(&a) && !a.starts_with(&beside));
        let other_bucket = s3("c", "etcd/team-a/nightly").objects_root("t", "x").unwrap();
        assert!(!other_bucket.starts_with(&a));
    }
}
