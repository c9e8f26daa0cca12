//! `etcd-operator local --restore-from`: a new local cluster of 3 TLS members starts from a
//! backup of another one, with every acknowledged write of the source, under a new cluster ID.

use std::time::Duration;

use crate::support::local::{Local, Writer, assert_all_present};
use etcd_crds::Compression;
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
