//! Taking a backup: etcd's maintenance snapshot streamed from one healthy member through a
//! compressor and a SHA-256 into a multipart upload, then the manifest.
//!
//! Memory stays flat whatever the database size: a snapshot message (etcd sends 32 KiB chunks),
//! the compressor's window, and at most [`PART_SIZE`] × [`PARTS_IN_FLIGHT`] of upload buffers.

use std::time::Duration;

use async_compression::tokio::write::{GzipEncoder, ZstdEncoder};
use etcd_crds::{BackupRecord, Compression};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use object_store::buffered::BufWriter;
use object_store::{ObjectStoreExt, PutPayload};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::digest::HashingWriter;
use super::encrypt::{Binding, Key, SealingWriter};
use super::{Error, Location};
use crate::etcd::{self, ClientTls};

/// Size of one uploaded part (S3 needs at least 5 MiB for every part but the last).
pub const PART_SIZE: usize = 5 * 1024 * 1024;
/// Parts uploaded concurrently.
pub const PARTS_IN_FLIGHT: usize = 2;
/// Longest wait for the next snapshot message before the backup is given up.
const STALL_LIMIT: Duration = Duration::from_secs(60);

/// Streams a snapshot of the cluster at `endpoints` to `to` and writes its manifest.
///
/// On any failure the upload is aborted and no manifest is written: nothing half-done ever looks
/// like a backup.
pub async fn save(
    endpoints: &[String],
    tls: Option<&ClientTls>,
    to: &Location,
    compression: Compression,
    key: Option<&Key>,
) -> Result<BackupRecord, Error> {
    let started = now_in_seconds();
    let source = pick_member(endpoints, tls).await?;
    let cluster_id = Some(etcd::hex_id(source.cluster_id));
    let upload = BufWriter::with_capacity(to.store.clone(), to.path.clone(), PART_SIZE)
        .with_max_concurrency(PARTS_IN_FLIGHT);
    // What the manifest will say of the snapshot, sealed into it (see `encrypt`).
    let binding = Binding {
        cluster_id: cluster_id.clone(),
        revision: source.revision,
        start_time: Some(started.as_second()),
    };
    // Compressed first (sealed bytes do not compress), sealed, then hashed as stored.
    let sealing = SealingWriter::new(HashingWriter::new(upload), key, &binding)?;
    let sink = Encoder::new(compression, sealing);
    let (mut sink, copied) = copy_snapshot(&source.endpoint, tls, sink, to).await;
    if let Err(err) = copied {
        // Best effort: the abort failing leaves an incomplete multipart upload, never an object.
        if let Err(abort) = sink.into_inner().into_inner().into_parts().0.abort().await {
            tracing::warn!(location = %to.url, error = %abort, "aborting the upload failed");
        }
        return Err(err);
    }
    // Completes the upload. If this fails there is no object: a single PUT failed, or the
    // multipart upload was aborted by object_store (which must not be aborted twice).
    sink.shutdown().await.map_err(upload_error(to))?;
    let digest = sink.into_inner().into_inner().into_parts().1;
    let record = BackupRecord {
        location: to.url.clone(),
        size: i64::try_from(digest.bytes()).unwrap_or(i64::MAX),
        sha256: digest.hex(),
        revision: source.revision,
        cluster_id,
        compression,
        encrypted: key.is_some(),
        start_time: Some(Time(started)),
        completion_time: Some(Time(now_in_seconds())),
        verified_time: None,
        key_count: None,
    };
    write_manifest(to, &record).await?;
    Ok(record)
}

/// The time now at the precision a Kubernetes `Time` keeps, so that a record read back from its
/// manifest or from status equals the one written.
pub(super) fn now_in_seconds() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The member a snapshot is taken from, and what it said before.
struct Source {
    endpoint: String,
    revision: i64,
    cluster_id: u64,
}

/// The first endpoint that answers as a voting member (a learner's data may lag behind).
async fn pick_member(endpoints: &[String], tls: Option<&ClientTls>) -> Result<Source, Error> {
    for endpoint in endpoints {
        let status = match etcd::endpoint_status(endpoint, tls).await {
            Ok(status) if !status.is_learner => status,
            Ok(_) => continue,
            Err(err) => {
                tracing::info!(%endpoint, error = %err, "not taking the snapshot from this member");
                continue;
            }
        };
        let mut client = etcd::connect(std::slice::from_ref(endpoint), tls).await?;
        let revision = etcd::revision(&mut client).await?;
        return Ok(Source { endpoint: endpoint.clone(), revision, cluster_id: status.cluster_id });
    }
    Err(Error::NoHealthyMember { endpoints: endpoints.join(",") })
}

/// Copies the snapshot into `sink`. Hands the sink back in every case so that a failed upload
/// can be aborted.
async fn copy_snapshot(
    endpoint: &str,
    tls: Option<&ClientTls>,
    mut sink: Encoder,
    to: &Location,
) -> (Encoder, Result<(), Error>) {
    let result = async {
        let mut client = etcd::connect_streaming(endpoint, tls).await?;
        let snapshot_error = |source| Error::Snapshot { endpoint: endpoint.to_owned(), source };
        let mut stream = client.snapshot().await.map_err(snapshot_error)?;
        loop {
            let message = tokio::time::timeout(STALL_LIMIT, stream.message())
                .await
                .map_err(|_| Error::SnapshotStalled {
                    endpoint: endpoint.to_owned(),
                    seconds: STALL_LIMIT.as_secs(),
                })?
                .map_err(snapshot_error)?;
            let Some(message) = message else { break };
            sink.write_all(message.blob()).await.map_err(upload_error(to))?;
        }
        Ok(())
    }
    .await;
    (sink, result)
}

fn upload_error(to: &Location) -> impl Fn(std::io::Error) -> Error + '_ {
    |source| Error::Io { what: "cannot upload the snapshot to", path: to.url.clone(), source }
}

pub(super) async fn write_manifest(to: &Location, record: &BackupRecord) -> Result<(), Error> {
    let manifest = to.manifest();
    let body = serde_json::to_vec_pretty(record)
        .map_err(|source| Error::BadManifest { manifest: manifest.url.clone(), source })?;
    manifest.store.put(&manifest.path, PutPayload::from(body)).await.map_err(|source| {
        Error::Store { what: "put of the manifest", location: manifest.url.clone(), source }
    })?;
    Ok(())
}

type Sink = SealingWriter<HashingWriter<BufWriter>>;

/// The compressor a spec asks for, in front of the hashing upload.
enum Encoder {
    None(Sink),
    Gzip(GzipEncoder<Sink>),
    Zstd(ZstdEncoder<Sink>),
}

impl Encoder {
    fn new(compression: Compression, sink: Sink) -> Self {
        match compression {
            Compression::None => Encoder::None(sink),
            Compression::Gzip => Encoder::Gzip(GzipEncoder::new(sink)),
            // Level 1, not zstd's default 3: level 3 ran at 0.97× `etcdctl snapshot save` (the
            // bench), so a compressed backup took longer than an uncompressed etcdctl one;
            // level 1 keeps most of the ratio at about twice the speed. Its multithreaded mode
            // (one worker) was tried too: no faster on two cores, and 15 MiB more at the peak.
            Compression::Zstd => {
                Encoder::Zstd(ZstdEncoder::with_quality(sink, async_compression::Level::Fastest))
            }
        }
    }

    fn writer(&mut self) -> &mut (dyn AsyncWrite + Unpin + Send) {
        match self {
            Encoder::None(w) => w,
            Encoder::Gzip(w) => w,
            Encoder::Zstd(w) => w,
        }
    }

    async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.writer().write_all(data).await
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        self.writer().shutdown().await
    }

    fn into_inner(self) -> Sink {
        match self {
            Encoder::None(w) => w,
            Encoder::Gzip(w) => w.into_inner(),
            Encoder::Zstd(w) => w.into_inner(),
        }
    }
}
