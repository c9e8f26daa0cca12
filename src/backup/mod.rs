//! Snapshots to and from object storage.
//!
//! A backup is two objects: the snapshot (`KEY`, compressed as the spec says) and its manifest
//! (`KEY.manifest.json`, a [`BackupRecord`](etcd_crds::BackupRecord) with size, SHA-256, revision
//! and cluster ID). The manifest is written only after the snapshot upload has completed, so a
//! manifest is the proof of a good backup: retention counts manifests, and a restore verifies the
//! snapshot's bytes against the manifest's checksum before anything is started from it.

pub mod digest;
pub mod encrypt;
pub mod fetch;
pub mod job;
pub mod location;
pub mod restore;
pub mod retention;
pub mod save;
pub mod schedule;
pub mod verify;

pub use location::Location;

/// Suffix of a snapshot's manifest object.
pub const MANIFEST_SUFFIX: &str = ".manifest.json";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{location} is not a storage location: {reason}")]
    BadLocation { location: String, reason: String },
    #[error("object store {what} of {location} failed: {source}")]
    Store { what: &'static str, location: String, source: object_store::Error },
    #[error(transparent)]
    Etcd(#[from] crate::etcd::Error),
    #[error("etcd snapshot stream from {endpoint} failed: {source}")]
    Snapshot { endpoint: String, source: etcd_client::Error },
    #[error("etcd snapshot stream from {endpoint} stalled: no data for {seconds}s")]
    SnapshotStalled { endpoint: String, seconds: u64 },
    #[error("no endpoint of {endpoints} answered; cannot take a snapshot")]
    NoHealthyMember { endpoints: String },
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: String, source: std::io::Error },
    #[error(
        "checksum mismatch for {location}: expected sha256 {expected}, got {actual}; \
         the object is corrupt or not the recorded backup, nothing was restored from it"
    )]
    ChecksumMismatch { location: String, expected: String, actual: String },
    #[error("no manifest {manifest} and no --sha256 given: cannot verify {location}")]
    NoManifest { location: String, manifest: String },
    #[error("manifest {manifest} is not valid: {source}")]
    BadManifest { manifest: String, source: serde_json::Error },
    #[error("data directory {0} already exists; restore only creates new ones")]
    DataDirExists(String),
    #[error("{tool} failed ({status}): {stderr}")]
    RestoreTool { tool: &'static str, status: String, stderr: String },
    #[error("encryption key from {origin}: {reason}")]
    BadKey { origin: String, reason: String },
    #[error("cannot decrypt {path}: {reason}")]
    Decrypt { path: String, reason: String },
    #[error("{location} is encrypted: the restore needs its key")]
    KeyNeeded { location: String },
    #[error("backup {location} failed verification: {reason}")]
    Unverified { location: String, reason: String },
    #[error("schedule {schedule:?} is not a cron expression: {reason}")]
    Schedule { schedule: String, reason: String },
}
