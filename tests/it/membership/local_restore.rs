//! `etcd-operator local --restore-from`: a new local cluster of 3 TLS members starts from a
//! backup of another one, with every acknowledged write of the source, under a new cluster ID.

use std::time::Duration;

use crate::support::local::{Local, Writer, assert_all_present, release_flag};
use etcd_client::GetOptions;
use etcd_crds::Compression;
use etcd_operator::backup::restore::REVISION_BUMP;
use etcd_operator::backup::{Location, save::save};

#[tokio::test(flavor = "multi_thread")]
async fn a_new_local_cluster_starts_from_a_backup_with_every_write() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let source = Local::start(3);
    let source_status = source.wait_running(3, Duration::from_secs(60)).await;
    let endpoints = source_status.client_endpoints.clone();
    let writer = Writer::start(endpoints.clone(), source.tls());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (keys, _) = writer.finish().await;
    assert!(keys.len() > 20, "the writer wrote: {}", keys.len());

    let backups = tempfile::tempdir().unwrap();
    let object = backups.path().join("source.db.zst");
    let to = Location::parse(object.to_str().unwrap(), &Default::default()).unwrap();
    save(&endpoints, Some(&source.tls()), &to, Compression::Zstd, None).await.unwrap();
    drop(source);

    let restored = Local::start_with(3, &["--restore-from", object.to_str().unwrap()]);
    let status = restored.wait_running(3, Duration::from_secs(60)).await;
    assert_ne!(status.cluster_id, source_status.cluster_id, "a restore is a new cluster");
    assert_all_present(&status.client_endpoints, &restored.tls(), &keys).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_source_that_fails_verification_starts_nothing() {
    let backups = tempfile::tempdir().unwrap();
    let object = backups.path().join("missing.db.zst");
    let mut local = Local::start_with(1, &["--restore-from", object.to_str().unwrap()]);
    let code = local.wait_operator_exit(Duration::from_secs(30));
    assert_eq!(code, Some(1), "the operator refuses to start");
    let log = std::fs::read_to_string(local.dir.path().join("operator.log")).unwrap();
    assert!(log.contains("no manifest"), "{log}");
    assert!(local.status().members.is_empty(), "no member was started");
}

/// A restore moves revisions forward: a client that saw a revision of the old cluster newer
/// than the snapshot must not find the same numbers holding other history. On 3.5.36 (etcdutl
/// 3.5.10+), the restored cluster starts a billion revisions on, the older ones compacted.
#[tokio::test(flavor = "multi_thread")]
async fn a_restored_cluster_moves_revisions_forward_and_marks_the_old_compacted() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let version = "3.5.36";
    let flag = release_flag(version);
    let source = Local::start_on(version, 1, &[&flag]);
    let source_status = source.wait_running(1, Duration::from_secs(60)).await;
    let endpoints = source_status.client_endpoints.clone();
    let mut client = etcd_operator::etcd::connect(&endpoints, Some(&source.tls())).await.unwrap();
    for i in 0..20 {
        client.put(format!("key-{i:06}"), "v", None).await.unwrap();
    }
    let backups = tempfile::tempdir().unwrap();
    let object = backups.path().join("source.db.zst");
    let to = Location::parse(object.to_str().unwrap(), &Default::default()).unwrap();
    let record = save(&endpoints, Some(&source.tls()), &to, Compression::Zstd, None).await.unwrap();
    drop(source);

    let restored =
        Local::start_on(version, 1, &[&flag, "--restore-from", object.to_str().unwrap()]);
    let status = restored.wait_running(1, Duration::from_secs(60)).await;
    let mut client = etcd_operator::etcd::connect(&status.client_endpoints, Some(&restored.tls()))
        .await
        .unwrap();
    let now = client.get("key-", Some(GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(now.kvs().len(), 20, "every key restored");
    let revision = now.header().unwrap().revision();
    assert!(
        revision >= record.revision + REVISION_BUMP as i64,
        "the restored cluster is at revision {revision}, the snapshot was at {}",
        record.revision
    );
    let old = client
        .get("key-", Some(GetOptions::new().with_prefix().with_revision(record.revision)))
        .await;
    let err = old.expect_err("a read at an old revision is refused").to_string();
    assert!(err.contains("compacted"), "{err}");
}
