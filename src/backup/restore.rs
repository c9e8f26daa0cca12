//! Restoring one member's data directory from a backup: fetch and verify (see [`super::fetch`]),
//! then etcd's own tool writes the data directory (`etcdutl snapshot restore` where it exists,
//! etcd 3.5+; `etcdctl snapshot restore` on 3.4, which has no etcdutl).
//!
//! The directory is restored under a temporary name and renamed into place, so a crash midway
//! never leaves something that looks like a member's data.

use std::path::{Path, PathBuf};

use super::encrypt::Key;
use super::fetch::{Expected, fetch_verified};
use super::{Error, Location};

/// The member a data directory is restored for: the restored cluster's membership is written
/// into the data, so every member of it must be restored with the same `initial_cluster`.
#[derive(Clone, Debug)]
pub struct MemberSpec {
    pub name: String,
    /// `name=peerURL,...` of every member of the restored cluster.
    pub initial_cluster: String,
    pub peer_url: String,
    pub cluster_token: String,
    pub data_dir: PathBuf,
    /// The directory of the etcd whose tools restore it (that of the version the cluster will
    /// run); `None`: the tools on PATH.
    pub tools: Option<PathBuf>,
}

/// Fetches the snapshot at `from`, verifies it against `sha256` or its manifest, and restores
/// `member`'s data directory from it, refusing a snapshot that decompresses past `max_bytes`.
pub async fn restore(
    from: &Location,
    sha256: Option<&str>,
    member: &MemberSpec,
    key: Option<&Key>,
    max_bytes: u64,
) -> Result<(), Error> {
    if member.data_dir.exists() {
        return Err(Error::DataDirExists(member.data_dir.display().to_string()));
    }
    let expected = Expected::resolve(from, sha256, max_bytes).await?;
    let parent = member.data_dir.parent().unwrap_or(Path::new("."));
    let io = |what, path: &Path| {
        let path = path.display().to_string();
        move |source| Error::Io { what, path, source }
    };
    tokio::fs::create_dir_all(parent).await.map_err(io("cannot create", parent))?;
    let work = tempfile::Builder::new()
        .prefix(".restore-")
        .tempdir_in(parent)
        .map_err(io("cannot create a work directory in", parent))?;
    let snapshot = fetch_verified(from, &expected, work.path(), key).await?;
    let revisions = Revisions::of_tool(member.tools.as_deref()).await;
    if revisions == Revisions::AsSnapshot {
        tracing::warn!(
            member = %member.name,
            "this etcd's restore tool cannot move revisions forward (etcdutl 3.5.10 or later can): the restored cluster starts at the snapshot's revision, so a client or informer that saw a newer one must start over"
        );
    }
    restore_data_dir(&snapshot, member, &work.path().join("data"), revisions).await?;
    tokio::fs::rename(work.path().join("data"), &member.data_dir)
        .await
        .map_err(io("cannot move the restored data into", &member.data_dir))?;
    Ok(())
}

/// How far past the snapshot's revision a restored cluster starts. The old cluster may have
/// served any revision after the snapshot was taken; a client or informer resuming from one of
/// those on the restored cluster (a watch, a list at a resourceVersion) would otherwise be
/// answered from different history at the same numbers and silently miss events. A billion
/// revisions is more than any cluster writes between two backups (a week at 1,600 writes a
/// second), and revisions are 63-bit: nine billion such restores fit.
pub const REVISION_BUMP: u64 = 1_000_000_000;

/// Where a restored cluster's revisions start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Revisions {
    /// [`REVISION_BUMP`] past the snapshot's, every older revision marked compacted: a watch
    /// or read from one of them fails with "compacted" and the client starts over.
    Forward,
    /// At the snapshot's: the tool cannot move them (etcdctl 3.4, etcdutl before 3.5.10).
    AsSnapshot,
}

impl Revisions {
    /// What the restore tool in `dir` (see [`restore_tool`]) can do, from its own help text.
    async fn of_tool(dir: Option<&Path>) -> Self {
        let args = ["snapshot", "restore", "--help"].map(String::from);
        match snapshot_tool(dir, &args).await {
            Ok(help) if String::from_utf8_lossy(&help).contains("--bump-revision") => Self::Forward,
            _ => Self::AsSnapshot,
        }
    }
}

/// Runs etcd's restore tool on a verified snapshot file, writing `into`.
pub(super) async fn restore_data_dir(
    snapshot: &Path,
    member: &MemberSpec,
    into: &Path,
    revisions: Revisions,
) -> Result<(), Error> {
    let mut args = vec![
        "snapshot".to_owned(),
        "restore".to_owned(),
        snapshot.display().to_string(),
        format!("--name={}", member.name),
        format!("--initial-cluster={}", member.initial_cluster),
        format!("--initial-cluster-token={}", member.cluster_token),
        format!("--initial-advertise-peer-urls={}", member.peer_url),
        format!("--data-dir={}", into.display()),
    ];
    if revisions == Revisions::Forward {
        args.push(format!("--bump-revision={REVISION_BUMP}"));
        args.push("--mark-compacted".to_owned());
    }
    snapshot_tool(member.tools.as_deref(), &args).await.map(drop)
}

/// Runs etcd's snapshot tool (see [`restore_tool`]) with `args`; its standard output, or why it
/// failed with what it said.
pub(super) async fn snapshot_tool(dir: Option<&Path>, args: &[String]) -> Result<Vec<u8>, Error> {
    let (tool, program) = restore_tool(dir);
    let output = tokio::process::Command::new(&program)
        .env("ETCDCTL_API", "3")
        .args(args)
        .output()
        .await
        .map_err(|source| Error::Io {
            what: "cannot run",
            path: program.display().to_string(),
            source,
        })?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    Err(Error::RestoreTool {
        tool,
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}

/// `etcdutl` where it is installed (etcd 3.5+ deprecates restore in etcdctl), else `etcdctl`:
/// in `dir` when given, else on PATH.
fn restore_tool(dir: Option<&Path>) -> (&'static str, PathBuf) {
    let found = |name: &str| match dir {
        Some(dir) => dir.join(name).is_file().then(|| dir.join(name)),
        None => std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file()))
            .then(|| PathBuf::from(name)),
    };
    match found("etcdutl") {
        Some(path) => ("etcdutl", path),
        None => ("etcdctl", found("etcdctl").unwrap_or_else(|| PathBuf::from("etcdctl"))),
    }
}
