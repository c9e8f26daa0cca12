//! What a restore takes from a store, where someone other than the operator may have written:
//! a plaintext object where the encrypted backup should be, a snapshot that decompresses without
//! end, a manifest without end. Each is refused before anything is restored.

use std::path::Path;

use etcd_operator::backup::Location;
use etcd_operator::backup::encrypt::Key;
use etcd_operator::backup::fetch::MANIFEST_LIMIT;
use etcd_operator::backup::restore::{MemberSpec, restore};

fn member(dir: &Path) -> MemberSpec {
    MemberSpec {
        name: "r0".into(),
        initial_cluster: "r0=http://127.0.0.1:1".into(),
        peer_url: "http://127.0.0.1:1".into(),
        cluster_token: "t".into(),
        data_dir: dir.join("data"),
        tools: None,
    }
}

/// Nothing but the data directory's parent is left: no data, no work files.
fn nothing_restored(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.iter().all(|name| name != "data"), "data was restored: {left:?}");
    assert!(
        left.iter().all(|name| !name.to_string_lossy().starts_with(".restore-")),
        "work files left: {left:?}"
    );
}

/// SHA-256, hexadecimal, as manifests record it.
fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Before, a restore with a key took a plaintext object as it was: whoever could write the store
/// (and its manifest, or the checksum in a spec) chose the restored data.
#[tokio::test]
async fn with_a_key_a_plaintext_object_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let object = dir.path().join("backup.db");
    std::fs::write(&object, b"ATTACKER-DATA").unwrap();
    let location = Location::parse(object.to_str().unwrap(), &Default::default()).unwrap();
    let key = Key::parse(&[7u8; 32], "test key").unwrap();
    let out = dir.path().join("restore");
    std::fs::create_dir_all(&out).unwrap();
    let sha = sha256_hex(b"ATTACKER-DATA");
    let err = restore(&location, Some(&sha), &member(&out), Some(&key), u64::MAX)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not encrypted, but a key is configured"), "{err}");
    nothing_restored(&out);
}

/// 64 MiB of zeros is a few kilobytes of zstd; a bound of 1 MiB stops it at 1 MiB.
#[tokio::test]
async fn a_snapshot_that_decompresses_past_its_bound_is_refused() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let mut encoder = async_compression::tokio::write::ZstdEncoder::new(Vec::new());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        encoder.write_all(&zeros).await.unwrap();
    }
    encoder.shutdown().await.unwrap();
    let bomb = encoder.into_inner();
    assert!(bomb.len() < 64 * 1024, "{} bytes", bomb.len());
    let object = dir.path().join("backup.db.zst");
    std::fs::write(&object, &bomb).unwrap();
    let location = Location::parse(object.to_str().unwrap(), &Default::default()).unwrap();
    let out = dir.path().join("restore");
    std::fs::create_dir_all(&out).unwrap();
    let err = restore(&location, Some(&sha256_hex(&bomb)), &member(&out), None, 1 << 20)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("larger than 1048576 bytes"), "{err}");
    nothing_restored(&out);
}

#[tokio::test]
async fn a_manifest_past_its_bound_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let object = dir.path().join("backup.db");
    std::fs::write(&object, b"x").unwrap();
    let padding = " ".repeat(MANIFEST_LIMIT + 1);
    std::fs::write(dir.path().join("backup.db.manifest.json"), format!("{{{padding}}}")).unwrap();
    let location = Location::parse(object.to_str().unwrap(), &Default::default()).unwrap();
    let out = dir.path().join("restore");
    std::fs::create_dir_all(&out).unwrap();
    let err =
        restore(&location, None, &member(&out), None, u64::MAX).await.unwrap_err().to_string();
    assert!(err.contains("manifest") && err.contains("larger than 65536 bytes"), "{err}");
    nothing_restored(&out);
}
