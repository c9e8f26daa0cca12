//! Snapshots to and from object storage.
//!
//! A backup is two objects: the snapshot (`KEY`, compressed as the spec says) and its manifest
//! (`KEY.manifest.json`, a [`BackupRecord`](etcd_crds::BackupRecord) with size, SHA-256, revision
//! and cluster ID). The manifest is written only after the snapshot upload has completed, so a
//! manifest is the proof of a good backup: retention counts manifests, and a restore verifies the
//! snapshot's bytes against the manifest's checksum before anything is started from it.

pub mod digest;
pub mod encrypt;
pub mod endpoints;
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
    #[error("credentials Secret: {reason}")]
    BadCredentials { reason: String },
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
    #[error(
        "{location} is not encrypted, but a key is configured: a plaintext object is not taken for \
         the encrypted backup (anyone who can write the store could have put it there); restore \
         it without the key only if you know where it came from"
    )]
    NotSealed { location: String },
    #[error("{what} {location} is larger than {limit} bytes: refused")]
    TooLarge { what: &'static str, location: String, limit: u64 },
    #[error("backup {location} failed verification: {reason}")]
    Unverified { location: String, reason: String },
    #[error("schedule {schedule:?} is not a cron expression: {reason}")]
    Schedule { schedule: String, reason: String },
}

impl Error {
    /// What a tenant may read of this error, in a condition or an Event; the whole chain goes to
    /// the operator's log. An object store's answer is never copied: the endpoint is the tenant's
    /// choice, and whatever answered there (an internal service, a metadata endpoint) must not be
    /// read back through the operator. What went wrong on the way (connect, TLS, DNS, a refused
    /// address) carries no answer and is said in full.
    pub fn for_tenant(&self) -> String {
        match self {
            Error::Store { what, location, source } => {
                format!("object store {what} of {location} failed: {}", store_failure(source))
            }
            // An upload's writer carries the store's error inside an I/O error.
            Error::Io { what, path, source } => {
                match source.get_ref().and_then(|inner| inner.downcast_ref::<object_store::Error>())
                {
                    Some(store) => format!("{what} {path}: {}", store_failure(store)),
                    None => crate::telemetry::chain(self),
                }
            }
            other => crate::telemetry::chain(other),
        }
    }
}

fn store_failure(err: &object_store::Error) -> String {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = cause {
        if let Some(transport) = current.downcast_ref::<object_store::client::HttpError>() {
            return crate::telemetry::chain(transport);
        }
        cause = current.source();
    }
    match err {
        object_store::Error::NotFound { .. } => "not found".to_owned(),
        object_store::Error::PermissionDenied { .. } => {
            "permission denied: the credentials may not do this".to_owned()
        }
        object_store::Error::Unauthenticated { .. } => "the credentials were refused".to_owned(),
        other => match answered_status(&other.to_string()) {
            Some(status) => format!("the store answered HTTP {status}"),
            None => "the store refused the request".to_owned(),
        },
    }
}

/// The status code in object_store's text for a non-2xx answer (its error type is private).
fn answered_status(text: &str) -> Option<u16> {
    const MARK: &str = "status code: ";
    let at = text.find(MARK)? + MARK.len();
    text.get(at..at + 3)?.parse().ok()
}
