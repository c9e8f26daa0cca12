//! Proof that a stored backup restores: the object read back from the store (never a local
//! copy), its checksum checked, the snapshot restored into a scratch directory with etcd's own
//! tool, and its revision compared with the one recorded when it was taken.

use std::path::Path;

use etcd_crds::BackupRecord;
use serde::Deserialize;

use super::encrypt::Key;
use super::fetch::{Expected, fetch_verified};
use super::restore::{MemberSpec, Revisions, restore_data_dir, snapshot_tool};
use super::{Error, Location};

/// What a restore of the stored object showed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The revision the snapshot holds (at least the one recorded before it was taken).
    pub revision: i64,
    /// Keys in the snapshot's backend, as `snapshot status` counts them (every revision kept).
    pub keys: i64,
}

/// `snapshot status -w json`, as etcdutl and etcdctl print it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotStatus {
    revision: i64,
    total_key: i64,
}

/// Verifies the backup `record` describes, stored at `location`, of a cluster whose snapshots
/// are at most `max_bytes`.
pub async fn verify(
    record: &BackupRecord,
    location: &Location,
    key: Option<&Key>,
    max_bytes: u64,
) -> Result<Verified, Error> {
    let work = tempfile::Builder::new().prefix("etcd-verify-").tempdir().map_err(|source| {
        Error::Io { what: "cannot create a scratch directory in", path: "TMPDIR".into(), source }
    })?;
    let expected = Expected::of(record, max_bytes);
    let snapshot = fetch_verified(location, &expected, work.path(), key).await?;
    let status = snapshot_status(&snapshot).await?;
    let scratch = MemberSpec {
        name: "verify".into(),
        initial_cluster: "verify=http://127.0.0.1:2380".into(),
        peer_url: "http://127.0.0.1:2380".into(),
        cluster_token: "verify".into(),
        data_dir: work.path().join("restored"),
        tools: None,
    };
    // A scratch copy to prove the snapshot restores: its revisions stay as stored.
    restore_data_dir(&snapshot, &scratch, &scratch.data_dir, Revisions::AsSnapshot).await?;
    let unverified =
        |reason: String| Error::Unverified { location: record.location.clone(), reason };
    if !scratch.data_dir.join("member/snap/db").is_file() {
        return Err(unverified("the restore wrote no member/snap/db".into()));
    }
    // `snapshot status` reports the revision of the newest key (0 with none), a store never
    // written to is at revision 1.
    if status.revision.max(1) < record.revision {
        return Err(unverified(format!(
            "the snapshot holds revision {}, older than the recorded {}",
            status.revision, record.revision
        )));
    }
    Ok(Verified { revision: status.revision, keys: status.total_key })
}

async fn snapshot_status(snapshot: &Path) -> Result<SnapshotStatus, Error> {
    let args = ["snapshot", "status", "-w", "json"].map(String::from);
    let args = [&args[..], &[snapshot.display().to_string()]].concat();
    let stdout = snapshot_tool(None, &args).await?;
    serde_json::from_slice(&stdout).map_err(|err| Error::RestoreTool {
        tool: "snapshot status",
        status: "unreadable output".into(),
        stderr: err.to_string(),
    })
}
