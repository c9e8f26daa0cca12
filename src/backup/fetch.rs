//! Fetching a backup for a restore: the stored bytes are downloaded and their SHA-256 checked
//! against the manifest (or a checksum the caller names) BEFORE they are decompressed, so a
//! corrupt or substituted object is refused with a checksum error and never reaches etcd.
//!
//! What is read from a store is bounded: a manifest is read up to [`MANIFEST_LIMIT`], a snapshot
//! is decompressed up to the bound the caller gives (a few kilobytes of zstd can expand to
//! gigabytes), and with a key configured only a sealed object is accepted, so an object written
//! in plain text by someone without the key is not restored as if it were the encrypted backup.

use std::path::{Path, PathBuf};

use async_compression::tokio::bufread::{GzipDecoder, ZstdDecoder};
use etcd_crds::{BackupRecord, Compression};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};

use super::digest::HashingWriter;
use super::encrypt::{Binding, Key, is_sealed_header, open_file};
use super::{Error, Location};

/// What a restore expects of the object at a location.
#[derive(Clone, Debug, PartialEq)]
pub struct Expected {
    pub sha256: String,
    pub compression: Compression,
    /// The most bytes the snapshot may decompress to ([`snapshot_bound`]).
    pub max_bytes: u64,
    /// What the manifest says of the snapshot, which a sealed object must have been sealed for
    /// (none with a checksum given by hand).
    pub binding: Option<Binding>,
}

impl Expected {
    /// From the manifest beside the object, or from `sha256` with the compression its name says.
    pub async fn resolve(
        from: &Location,
        sha256: Option<&str>,
        max_bytes: u64,
    ) -> Result<Self, Error> {
        if let Some(sha256) = sha256 {
            return Ok(Self {
                sha256: sha256.trim().to_ascii_lowercase(),
                compression: compression_of_name(&from.url),
                max_bytes,
                binding: None,
            });
        }
        Ok(Self::of(&read_manifest(from).await?, max_bytes))
    }

    /// What `record` (a manifest, or the operator's record of it) says to expect.
    pub fn of(record: &BackupRecord, max_bytes: u64) -> Self {
        Self {
            sha256: record.sha256.clone(),
            compression: record.compression,
            max_bytes,
            binding: Some(Binding::of(record)),
        }
    }
}

/// The largest snapshot a member with backend quota `quota_backend_bytes` can have written
/// (etcd's database stops growing soon after it passes the quota), with room to spare: twice the
/// quota, etcd's default of 2 GiB where none is set.
pub fn snapshot_bound(quota_backend_bytes: i64) -> u64 {
    const ETCD_DEFAULT_QUOTA: u64 = 2 << 30;
    let quota = u64::try_from(quota_backend_bytes).unwrap_or(0);
    (if quota == 0 { ETCD_DEFAULT_QUOTA } else { quota }).saturating_mul(2)
}

/// A manifest is a few hundred bytes; more is not one.
pub const MANIFEST_LIMIT: usize = 64 * 1024;

/// The manifest of the snapshot at `from`.
pub async fn read_manifest(from: &Location) -> Result<BackupRecord, Error> {
    let manifest = from.manifest();
    let store_error = |source| Error::Store { what: "get", location: manifest.url.clone(), source };
    let mut stream = match manifest.store.get(&manifest.path).await {
        Ok(result) => result.into_stream(),
        Err(object_store::Error::NotFound { .. }) => {
            return Err(Error::NoManifest {
                location: from.url.clone(),
                manifest: manifest.url.clone(),
            });
        }
        Err(source) => return Err(store_error(source)),
    };
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.map_err(store_error)?);
        if body.len() > MANIFEST_LIMIT {
            return Err(Error::TooLarge {
                what: "manifest",
                location: manifest.url.clone(),
                limit: MANIFEST_LIMIT as u64,
            });
        }
    }
    serde_json::from_slice(&body)
        .map_err(|source| Error::BadManifest { manifest: manifest.url.clone(), source })
}

fn compression_of_name(name: &str) -> Compression {
    if name.ends_with(".zst") {
        Compression::Zstd
    } else if name.ends_with(".gz") {
        Compression::Gzip
    } else {
        Compression::None
    }
}

/// Downloads the object at `from` into `work_dir`, verifies it, and decompresses it into
/// `work_dir/snapshot.db`, whose path is returned. Only a verified snapshot file is left behind.
pub async fn fetch_verified(
    from: &Location,
    expected: &Expected,
    work_dir: &Path,
    key: Option<&Key>,
) -> Result<PathBuf, Error> {
    let download = work_dir.join("snapshot.download");
    let opened = work_dir.join("snapshot.opened");
    let snapshot = work_dir.join("snapshot.db");
    let result = async {
        download_and_verify(from, expected, &download).await?;
        let sealed = is_sealed(&download).await?;
        if key.is_some() && !sealed {
            return Err(Error::NotSealed { location: from.url.clone() });
        }
        let compressed = if sealed {
            let key = key.ok_or_else(|| Error::KeyNeeded { location: from.url.clone() })?.clone();
            let (sealed, opened_path) = (download.clone(), opened.clone());
            let bound = tokio::task::spawn_blocking(move || open_file(&sealed, &opened_path, &key))
                .await
                .map_err(|err| Error::Decrypt {
                    path: from.url.clone(),
                    reason: err.to_string(),
                })??;
            if let (Some(sealed_for), Some(said)) = (&bound, &expected.binding)
                && sealed_for != said
            {
                return Err(Error::Decrypt {
                    path: from.url.clone(),
                    reason: format!(
                        "it was sealed for {sealed_for}, but its manifest says {said}: the manifest does not describe this object"
                    ),
                });
            }
            &opened
        } else {
            &download
        };
        decompress(compressed, expected.compression, &snapshot, expected.max_bytes).await.map_err(
            |err| match err {
                Error::TooLarge { what, limit, .. } => {
                    Error::TooLarge { what, location: from.url.clone(), limit }
                }
                other => other,
            },
        )
    }
    .await;
    // Intermediate files are never needed again; a failure leaves no snapshot.
    let _ = tokio::fs::remove_file(&download).await;
    let _ = tokio::fs::remove_file(&opened).await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&snapshot).await;
    }
    result.map(|()| snapshot)
}

/// Whether a downloaded object is an encrypted snapshot (it starts with the sealing header).
async fn is_sealed(path: &Path) -> Result<bool, Error> {
    use tokio::io::AsyncReadExt;
    let io = |source| Error::Io { what: "cannot read", path: path.display().to_string(), source };
    let mut file = tokio::fs::File::open(path).await.map_err(io)?;
    let mut header = [0u8; 8];
    let mut filled = 0;
    while filled < header.len() {
        match file.read(&mut header[filled..]).await.map_err(io)? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled == header.len() && is_sealed_header(&header))
}

async fn download_and_verify(
    from: &Location,
    expected: &Expected,
    download: &Path,
) -> Result<(), Error> {
    let io =
        |source| Error::Io { what: "cannot create", path: download.display().to_string(), source };
    let file = tokio::fs::File::create(download).await.map_err(io)?;
    copy_verified(from, expected, tokio::io::BufWriter::new(file), &download.display().to_string())
        .await
}

/// Reads the object at `from` whole and compares its SHA-256 with `sha256` or its manifest's,
/// keeping nothing: proof, before anything is deleted for it, that a restore from it would not
/// stop at its first check.
pub async fn check(from: &Location, sha256: Option<&str>) -> Result<(), Error> {
    let expected = Expected::resolve(from, sha256, u64::MAX).await?;
    copy_verified(from, &expected, tokio::io::sink(), "nowhere").await
}

/// Streams the object at `from` into `to` (named `to_name` in errors), then checks its SHA-256.
async fn copy_verified(
    from: &Location,
    expected: &Expected,
    to: impl tokio::io::AsyncWrite + Unpin,
    to_name: &str,
) -> Result<(), Error> {
    let io = |source| Error::Io { what: "cannot write", path: to_name.to_owned(), source };
    let store_error = |source| Error::Store { what: "get", location: from.url.clone(), source };
    let mut writer = HashingWriter::new(to);
    let mut stream = from.store.get(&from.path).await.map_err(store_error)?.into_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(store_error)?;
        writer.write_all(&chunk).await.map_err(io)?;
    }
    writer.shutdown().await.map_err(io)?;
    let actual = writer.into_parts().1.hex();
    if actual != expected.sha256 {
        return Err(Error::ChecksumMismatch {
            location: from.url.clone(),
            expected: expected.sha256.clone(),
            actual,
        });
    }
    Ok(())
}

async fn decompress(
    from: &Path,
    compression: Compression,
    to: &Path,
    max_bytes: u64,
) -> Result<(), Error> {
    let io = |what, path: &Path| {
        let path = path.display().to_string();
        move |source| Error::Io { what, path, source }
    };
    let input = BufReader::new(tokio::fs::File::open(from).await.map_err(io("cannot open", from))?);
    let reader: Box<dyn AsyncRead + Unpin + Send> = match compression {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(GzipDecoder::new(input)),
        Compression::Zstd => Box::new(ZstdDecoder::new(input)),
    };
    let mut output = tokio::fs::File::create(to).await.map_err(io("cannot create", to))?;
    let mut bounded = reader.take(max_bytes.saturating_add(1));
    let written = tokio::io::copy(&mut bounded, &mut output)
        .await
        .map_err(io("cannot decompress into", to))?;
    if written > max_bytes {
        return Err(Error::TooLarge {
            what: "decompressed snapshot",
            location: from.display().to_string(),
            limit: max_bytes,
        });
    }
    output.sync_all().await.map_err(io("cannot write", to))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_bound_is_twice_the_quota() {
        assert_eq!(snapshot_bound(0), 4 << 30);
        assert_eq!(snapshot_bound(-1), 4 << 30);
        assert_eq!(snapshot_bound(100 << 20), 200 << 20);
    }

    #[test]
    fn compression_follows_the_name() {
        assert_eq!(compression_of_name("s3://b/x.db.zst"), Compression::Zstd);
        assert_eq!(compression_of_name("file:///x.db.gz"), Compression::Gzip);
        assert_eq!(compression_of_name("/x.db"), Compression::None);
    }
}
