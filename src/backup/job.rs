//! One backup run as the controller makes it: a snapshot named after its scheduled time under the
//! backup's prefix, then retention. The time is passed in, so a test's clock drives it.

use etcd_crds::{BackupRecord, Compression};
use k8s_openapi::jiff::Timestamp;

use super::encrypt::Key;
use super::retention::{Stored, prune};
use super::save::{now_in_seconds, save, write_manifest};
use super::verify::verify;
use super::{Error, Location};
use crate::etcd::ClientTls;

/// Everything a run needs, gathered by the controller from the EtcdBackup and its cluster.
#[derive(Clone, Debug)]
pub struct Job {
    pub cluster: String,
    pub endpoints: Vec<String>,
    pub tls: Option<ClientTls>,
    /// Where this backup's snapshots live (one prefix per EtcdBackup).
    pub prefix: Location,
    pub compression: Compression,
    /// How many of the newest backups to keep (at least one).
    pub retention: usize,
    /// Seals every snapshot when set.
    pub key: Option<Key>,
    /// The cluster's snapshot bound ([`super::fetch::snapshot_bound`]), for verification.
    pub max_snapshot_bytes: u64,
    /// The backups the operator recorded itself (the EtcdBackup's status): with this run's, the
    /// only ones retention trusts as verified (see [`super::retention`]).
    pub recorded: Vec<BackupRecord>,
}

/// What a run stored and what remains after retention, newest first.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    pub record: BackupRecord,
    pub kept: Vec<Stored>,
}

impl Job {
    /// Takes the snapshot for the run scheduled at `at`, proves it restores (read back from the
    /// store, checksum, a scratch restore; the manifest then says so), then prunes to the
    /// retention. A backup that fails verification fails the run and counts for nothing.
    pub async fn run(&self, at: Timestamp) -> Result<RunOutcome, Error> {
        self.store_as(&object_name(&self.cluster, at, self.compression)).await
    }

    /// The last backup of a cluster being deleted: a run like any other (verified, retention
    /// applied; being the newest, it is kept), under a name that says what it is.
    pub async fn run_final(&self, at: Timestamp) -> Result<RunOutcome, Error> {
        self.store_as(&object_name(&format!("{}-final", self.cluster), at, self.compression)).await
    }

    async fn store_as(&self, name: &str) -> Result<RunOutcome, Error> {
        let to = self.prefix.child(name);
        let mut record =
            save(&self.endpoints, self.tls.as_ref(), &to, self.compression, self.key.as_ref())
                .await?;
        let verified = verify(&record, &to, self.key.as_ref(), self.max_snapshot_bytes).await?;
        record.verified_time =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now_in_seconds()));
        record.key_count = Some(verified.keys);
        write_manifest(&to, &record).await?;
        let recorded: Vec<BackupRecord> =
            self.recorded.iter().cloned().chain([record.clone()]).collect();
        let kept = prune(&self.prefix, self.retention.max(1), &recorded).await?;
        Ok(RunOutcome { record, kept })
    }
}

/// `CLUSTER-20261124T031500Z.db.zst`: names sort by time, and say what they hold.
pub fn object_name(cluster: &str, at: Timestamp, compression: Compression) -> String {
    let extension = match compression {
        Compression::None => "db",
        Compression::Gzip => "db.gz",
        Compression::Zstd => "db.zst",
    };
    format!("{cluster}-{}.{extension}", at.strftime("%Y%m%dT%H%M%SZ"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_time_and_the_compression() {
        let at: Timestamp = "2026-11-24T03:15:00Z".parse().unwrap();
        assert_eq!(object_name("main", at, Compression::Zstd), "main-20261124T031500Z.db.zst");
        assert_eq!(object_name("main", at, Compression::Gzip), "main-20261124T031500Z.db.gz");
    }
}
