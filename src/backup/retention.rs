//! Retention: the backups under a prefix are the manifests there; the newest N verified ones
//! are kept, and an unverified one only while it is newer than the oldest of those (a person
//! may want to look at it; it never counts towards N).
//!
//! A manifest is only what someone wrote to the store, and more may write there than the
//! operator (whoever holds the bucket's credentials). So a backup counts as verified only when
//! the operator recorded it so itself (the EtcdBackup's status, or this run): a manifest that
//! claims verification the operator never recorded is neither counted, pruned, listed in the
//! status nor ever restored. Otherwise a few such manifests would push the real backups out of
//! retention, and name themselves the newest for recovery. A status lost with its object leaves
//! the backups it recorded alone in the store, for a person to restore by location.

use etcd_crds::BackupRecord;
use object_store::ObjectStoreExt;
use object_store::path::Path;

use super::fetch::read_manifest;
use super::{Error, Location, MANIFEST_SUFFIX};

/// A stored backup: where its snapshot is, and its manifest.
#[derive(Clone, Debug)]
pub struct Stored {
    pub snapshot: Location,
    pub record: BackupRecord,
}

/// The backups directly under `prefix`, newest first. Only this level is listed: another
/// EtcdBackup's prefix may lie inside this one's (a destination prefix is the tenant's choice),
/// and its backups must neither count here nor be pruned, nor be restored as this one's.
pub async fn list(prefix: &Location) -> Result<Vec<Stored>, Error> {
    let store_error = |source| Error::Store { what: "list", location: prefix.url.clone(), source };
    let objects = match prefix.store.list_with_delimiter(Some(&prefix.path)).await {
        Ok(listed) => listed.objects,
        Err(object_store::Error::NotFound { .. }) => Vec::new(),
        Err(source) => return Err(store_error(source)),
    };
    let mut stored = Vec::new();
    for object in objects {
        let Some(snapshot) = object.location.as_ref().strip_suffix(MANIFEST_SUFFIX) else {
            continue;
        };
        let snapshot = Location {
            store: prefix.store.clone(),
            url: relative_url(prefix, snapshot),
            path: Path::from(snapshot),
        };
        let record = read_manifest(&snapshot).await?;
        stored.push(Stored { snapshot, record });
    }
    newest_first(&mut stored);
    Ok(stored)
}

/// Deletes what retention no longer keeps under `prefix` (see the module), trusting only the
/// verification `recorded` says the operator made; returns what is kept, newest first. The
/// manifest goes first: a crash between the two deletes leaves an unlisted object, never a
/// listed backup without its data.
pub async fn prune(
    prefix: &Location,
    keep: usize,
    recorded: &[BackupRecord],
) -> Result<Vec<Stored>, Error> {
    let (stored, expired) = retained(vouched(list(prefix).await?, recorded), keep);
    for old in expired {
        for object in [old.snapshot.manifest(), old.snapshot.clone()] {
            match object.store.delete(&object.path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(source) => {
                    return Err(Error::Store { what: "delete", location: object.url, source });
                }
            }
        }
        tracing::info!(location = %old.snapshot.url, "deleted a backup past retention");
    }
    Ok(stored)
}

/// `listed` as the operator recorded it: a backup it recorded carries its own record (times,
/// verification), not what the manifest says; one it did not record stays only while it claims
/// no verification. Newest first, by the times kept.
fn vouched(listed: Vec<Stored>, recorded: &[BackupRecord]) -> Vec<Stored> {
    let mut vouched: Vec<Stored> = listed
        .into_iter()
        .filter_map(|stored| {
            let own = recorded.iter().find(|r| {
                r.location == stored.snapshot.url && r.sha256 == stored.record.sha256
            });
            match own {
                Some(own) => Some(Stored { record: own.clone(), ..stored }),
                None if stored.record.verified_time.is_none() => Some(stored),
                None => {
                    tracing::warn!(
                        location = %stored.snapshot.url,
                        "a manifest claims a verified backup the operator never recorded; left alone, never counted or restored"
                    );
                    None
                }
            }
        })
        .collect();
    newest_first(&mut vouched);
    vouched
}

/// Newest first, by completion time (then name, so that the order is the same every time).
fn newest_first(stored: &mut [Stored]) {
    stored.sort_by_key(|s| {
        std::cmp::Reverse((s.record.completion_time.clone().map(|t| t.0), s.snapshot.url.clone()))
    });
}

/// Splits `stored` (newest first) into what retention keeps and what it deletes.
fn retained(stored: Vec<Stored>, keep: usize) -> (Vec<Stored>, Vec<Stored>) {
    let mut verified = 0;
    stored.into_iter().partition(|s| {
        if verified >= keep {
            return false;
        }
        verified += usize::from(s.record.verified_time.is_some());
        true
    })
}

fn relative_url(prefix: &Location, path: &str) -> String {
    let relative = path.strip_prefix(prefix.path.as_ref()).unwrap_or(path);
    prefix.child(relative.trim_start_matches('/')).url
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use etcd_crds::BackupRecord;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use object_store::memory::InMemory;

    use super::*;

    fn stored(name: &str, verified: bool) -> Stored {
        let record = BackupRecord {
            verified_time: verified.then_some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
            ..BackupRecord::default()
        };
        let snapshot =
            Location { store: Arc::new(InMemory::new()), url: name.into(), path: Path::from(name) };
        Stored { snapshot, record }
    }

    /// Before, the listing was recursive: a backup under a nested prefix was counted here.
    #[tokio::test]
    async fn only_this_prefixs_own_backups_are_listed() {
        let store: Arc<dyn object_store::ObjectStore> = Arc::new(InMemory::new());
        let manifest = serde_json::to_vec(&BackupRecord::default()).unwrap();
        for path in ["ns/daily/a.db.manifest.json", "ns/daily/other/ns2/b/c.db.manifest.json"] {
            store.put(&Path::from(path), manifest.clone().into()).await.unwrap();
        }
        let prefix = Location { store, url: "mem://ns/daily".into(), path: Path::from("ns/daily") };
        let listed = list(&prefix).await.unwrap();
        let urls: Vec<_> = listed.iter().map(|s| s.snapshot.url.as_str()).collect();
        assert_eq!(urls, ["mem://ns/daily/a.db"]);
    }

    /// A manifest counts as verified only if the operator recorded it so, with that checksum.
    #[test]
    fn only_what_the_operator_recorded_is_trusted_as_verified() {
        let mut own = stored("own", true);
        own.record.location = "own".into();
        own.record.sha256 = "aa".into();
        let mut swapped = stored("own-swapped", true);
        swapped.record.location = "own-swapped".into();
        swapped.record.sha256 = "bb".into();
        let recorded = vec![
            own.record.clone(),
            BackupRecord {
                location: "own-swapped".into(),
                sha256: "cc".into(),
                ..own.record.clone()
            },
        ];
        let listed = vec![stored("forged", true), own, swapped, stored("failed-run", false)];
        let urls: Vec<String> =
            vouched(listed, &recorded).into_iter().map(|s| s.snapshot.url).collect();
        assert_eq!(urls, ["own", "failed-run"]);
    }

    #[test]
    fn only_verified_backups_count_and_unverified_ones_go_once_older_than_the_kept() {
        // Newest first: an unverified run, two verified, an unverified, a verified.
        let all = vec![
            stored("e", false),
            stored("d", true),
            stored("c", true),
            stored("b", false),
            stored("a", true),
        ];
        let (kept, expired) = retained(all, 2);
        let urls = |v: &[Stored]| v.iter().map(|s| s.snapshot.url.clone()).collect::<Vec<_>>();
        assert_eq!(urls(&kept), ["e", "d", "c"]);
        assert_eq!(urls(&expired), ["b", "a"]);
    }
}
