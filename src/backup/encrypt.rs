//! Client-side encryption of snapshots: AES-256-GCM in the STREAM construction (Hoang, Reyhanitabar,
//! Rogaway and Vizár; the big-endian 32-bit counter variant, as the `aead` crate's `StreamBE32`
//! lays it out), so that a snapshot of any size is sealed in segments as it streams, and a
//! truncated, reordered or altered object fails to open.
//!
//! Layout: `MAGIC_BOUND`, the length (u16, big-endian) and JSON of the [`Binding`], a 7-byte
//! random nonce prefix, then segments of `SEGMENT` plaintext bytes sealed with a 16-byte tag each
//! and the header before the nonce prefix as associated data; the final segment (0..=SEGMENT
//! bytes) is sealed as the last, which is how a reader knows nothing was cut off. The nonce of
//! segment `i` is the prefix, `i` as a big-endian u32, and one byte that is 1 for the last
//! segment and 0 before it. Objects sealed before bindings existed (`MAGIC`, no binding, no
//! associated data) still open.
//!
//! The binding ties the object to its manifest: the cluster, revision and time the manifest
//! records are sealed into every segment, so a manifest that describes another snapshot (a
//! newer revision, another cluster) beside this object is refused when it opens, not restored
//! as what the manifest claims.
//!
//! ring's AES-GCM seals: its assembly runs at the same speed whatever the build optimises for
//! (RustCrypto's `aes-gcm`, used before with the same layout, lost a sixth of a backup's throughput
//! in a build optimised for size), and ring is already the one crypto provider of the TLS stacks.

use std::io::{Read, Write};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use base64::Engine;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use tokio::io::AsyncWrite;

use super::Error;

/// Environment variable holding a key (raw or base64), filled from a Secret in pods.
pub const KEY_ENV: &str = "ETCD_OPERATOR_ENCRYPTION_KEY";

const MAGIC: &[u8; 8] = b"ETCDOPE1";
const MAGIC_BOUND: &[u8; 8] = b"ETCDOPE2";
/// A binding is a few dozen bytes of JSON; more is not one.
const BINDING_LIMIT: usize = 1024;
const NONCE_PREFIX: usize = 7;
const SEGMENT: usize = 64 * 1024;
const TAG: usize = 16;

/// What a sealed snapshot says of itself, authenticated with every segment: what its manifest
/// records of the snapshot (see the module).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Binding {
    #[serde(rename = "clusterID")]
    pub cluster_id: Option<String>,
    pub revision: i64,
    /// When the snapshot was started, in seconds since the epoch.
    pub start_time: Option<i64>,
}

impl Binding {
    /// What `record` (a manifest) says of its snapshot.
    pub fn of(record: &etcd_crds::BackupRecord) -> Self {
        Self {
            cluster_id: record.cluster_id.clone(),
            revision: record.revision,
            start_time: record.start_time.as_ref().map(|t| t.0.as_second()),
        }
    }
}

impl std::fmt::Display for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cluster = self.cluster_id.as_deref().unwrap_or("unknown");
        let started = self.start_time.map_or_else(|| "unknown".to_owned(), |t| t.to_string());
        write!(f, "cluster {cluster}, revision {}, started at {started}", self.revision)
    }
}

/// A 256-bit key. `Debug` never shows it.
#[derive(Clone)]
pub struct Key(LessSafeKey);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl Key {
    /// 32 raw bytes, or their base64 (what a Secret created from a generated key file holds).
    pub fn parse(bytes: &[u8], source: &str) -> Result<Self, Error> {
        let trimmed = std::str::from_utf8(bytes).map(str::trim).ok();
        let decoded =
            trimmed.and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok());
        let raw = match decoded {
            Some(decoded) if decoded.len() == 32 => decoded,
            _ if bytes.len() == 32 => bytes.to_vec(),
            _ => {
                return Err(Error::BadKey {
                    origin: source.to_owned(),
                    reason: "an encryption key is 32 bytes, raw or base64".to_owned(),
                });
            }
        };
        let key = UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| Error::BadKey {
            origin: source.to_owned(),
            reason: "not an AES-256 key".to_owned(),
        })?;
        Ok(Self(LessSafeKey::new(key)))
    }

    /// The key in [`KEY_ENV`], if set (how member-init and `local` receive it).
    pub fn from_env() -> Result<Option<Self>, Error> {
        use std::os::unix::ffi::OsStrExt;
        std::env::var_os(KEY_ENV).map(|value| Self::parse(value.as_bytes(), KEY_ENV)).transpose()
    }

    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            what: "cannot read",
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&bytes, &path.display().to_string())
    }
}

/// One object's segments, in order: the nonce of each, sealing and opening.
struct Stream {
    key: LessSafeKey,
    prefix: [u8; NONCE_PREFIX],
    /// Authenticated with every segment: the header before the nonce prefix (none before
    /// bindings existed).
    aad: Vec<u8>,
    /// The next segment's number; `None` once the last segment is sealed or opened.
    position: Option<u32>,
}

/// The counter ran out (2³² segments of 64 KiB: 256 TiB), or a segment came after the last.
#[derive(Debug)]
struct Spent;

impl Stream {
    fn new(key: &Key, prefix: [u8; NONCE_PREFIX], aad: Vec<u8>) -> Self {
        Self { key: key.0.clone(), prefix, aad, position: Some(0) }
    }

    /// The last segment has passed: no segment may follow it.
    fn finished(&self) -> bool {
        self.position.is_none()
    }

    fn nonce(&mut self, last: bool) -> Result<Nonce, Spent> {
        let position = self.position.ok_or(Spent)?;
        // The counter's last value is left for a last segment, as in `StreamBE32`.
        if !last && position == u32::MAX {
            return Err(Spent);
        }
        self.position = if last { None } else { Some(position + 1) };
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..NONCE_PREFIX].copy_from_slice(&self.prefix);
        nonce[NONCE_PREFIX..NONCE_LEN - 1].copy_from_slice(&position.to_be_bytes());
        nonce[NONCE_LEN - 1] = u8::from(last);
        Ok(Nonce::assume_unique_for_key(nonce))
    }

    /// Seals `segment` where it is, its tag appended.
    fn seal(&mut self, segment: &mut Vec<u8>, last: bool) -> Result<(), Spent> {
        let nonce = self.nonce(last)?;
        self.key.seal_in_place_append_tag(nonce, Aad::from(&self.aad), segment).map_err(|_| Spent)
    }

    /// Opens a sealed segment where it is; `None` when it does not open (wrong key, altered,
    /// out of place).
    fn open<'a>(&mut self, sealed: &'a mut [u8], last: bool) -> Option<&'a mut [u8]> {
        let nonce = self.nonce(last).ok()?;
        self.key.open_in_place(nonce, Aad::from(&self.aad), sealed).ok()
    }
}

/// Seals what is written to it into `inner`; with no key it passes bytes through unchanged.
pub struct SealingWriter<W> {
    inner: W,
    sealing: Option<Sealing>,
}

struct Sealing {
    stream: Stream,
    /// The segment being filled; sealed where it is once full (or at shutdown).
    plain: Vec<u8>,
    /// Sealed bytes not yet taken by `inner`, from `sent` on.
    out: Vec<u8>,
    sent: usize,
}

impl<W> SealingWriter<W> {
    /// Seals into `inner` with `key`, bound to what the manifest will say (see the module).
    pub fn new(inner: W, key: Option<&Key>, binding: &Binding) -> Result<Self, Error> {
        let Some(key) = key else { return Ok(Self { inner, sealing: None }) };
        let mut prefix = [0u8; NONCE_PREFIX];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut prefix).map_err(
            |_| Error::BadKey {
                origin: "the system".into(),
                reason: "no randomness for a nonce".into(),
            },
        )?;
        Ok(Self::with_prefix(inner, key, prefix, Some(binding)))
    }

    /// With `binding` `None`, the layout from before bindings (only tests write it).
    fn with_prefix(
        inner: W,
        key: &Key,
        prefix: [u8; NONCE_PREFIX],
        binding: Option<&Binding>,
    ) -> Self {
        let aad = match binding {
            Some(binding) => {
                let json = serde_json::to_vec(binding).unwrap_or_default();
                let len = u16::try_from(json.len()).unwrap_or(u16::MAX);
                [&MAGIC_BOUND[..], &len.to_be_bytes(), &json].concat()
            }
            None => MAGIC.to_vec(),
        };
        // Both buffers hold a sealed segment without growing: they trade places at each seal.
        let mut out = Vec::with_capacity(SEGMENT + TAG);
        out.extend_from_slice(&aad);
        out.extend_from_slice(&prefix);
        let aad = if binding.is_some() { aad } else { Vec::new() };
        let sealing = Sealing {
            stream: Stream::new(key, prefix, aad),
            plain: Vec::with_capacity(SEGMENT + TAG),
            out,
            sent: 0,
        };
        Self { inner, sealing: Some(sealing) }
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl Sealing {
    /// Seals the segment filled so far and queues it to be written (`out` is drained).
    fn seal(&mut self, last: bool) -> std::io::Result<()> {
        self.stream.seal(&mut self.plain, last).map_err(|Spent| {
            std::io::Error::other("AES-GCM sealing failed (segment counter exhausted)")
        })?;
        std::mem::swap(&mut self.plain, &mut self.out);
        self.plain.clear();
        Ok(())
    }
}

impl<W: AsyncWrite + Unpin> SealingWriter<W> {
    /// Writes out every sealed byte waiting.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let Some(sealing) = self.sealing.as_mut() else { return Poll::Ready(Ok(())) };
        while sealing.sent < sealing.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &sealing.out[sealing.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            sealing.sent += n;
        }
        sealing.out.clear();
        sealing.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for SealingWriter<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.sealing.is_none() {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        ready!(this.poll_drain(cx))?;
        let Some(sealing) = this.sealing.as_mut() else { return Poll::Ready(Ok(0)) };
        if sealing.stream.finished() {
            return Poll::Ready(Err(std::io::Error::other("write after the last sealed segment")));
        }
        if sealing.plain.len() == SEGMENT {
            // A full segment with more data coming: it is not the last one.
            sealing.seal(false)?;
        }
        let n = buf.len().min(SEGMENT - sealing.plain.len());
        sealing.plain.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        if let Some(sealing) = self.sealing.as_mut()
            && !sealing.stream.finished()
        {
            sealing.seal(true)?;
            ready!(self.poll_drain(cx))?;
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Whether `header` (the first 8 bytes of an object) starts a sealed snapshot.
pub fn is_sealed_header(header: &[u8]) -> bool {
    header.starts_with(MAGIC) || header.starts_with(MAGIC_BOUND)
}

/// Opens a sealed file into `to`; what it was bound to (`None` for an object sealed before
/// bindings). Blocking: run it off the async runtime.
pub fn open_file(from: &Path, to: &Path, key: &Key) -> Result<Option<Binding>, Error> {
    let io = |what, path: &Path| {
        let path = path.display().to_string();
        move |source| Error::Io { what, path, source }
    };
    let refused = |reason: &str| Error::Decrypt {
        path: from.display().to_string(),
        reason: reason.to_owned(),
    };
    let mut input =
        std::io::BufReader::new(std::fs::File::open(from).map_err(io("cannot open", from))?);
    let short = || refused("too short to be an encrypted snapshot");
    let mut magic = [0u8; MAGIC.len()];
    input.read_exact(&mut magic).map_err(|_| short())?;
    let (binding, aad) = if &magic == MAGIC_BOUND {
        let mut len = [0u8; 2];
        input.read_exact(&mut len).map_err(|_| short())?;
        let len = usize::from(u16::from_be_bytes(len));
        if len > BINDING_LIMIT {
            return Err(refused("its binding is larger than any the operator writes"));
        }
        let mut json = vec![0u8; len];
        input.read_exact(&mut json).map_err(|_| short())?;
        // Read before it is authenticated (the first segment's tag covers it): only to be
        // returned once every segment has opened.
        let binding: Binding =
            serde_json::from_slice(&json).map_err(|_| refused("its binding is not readable"))?;
        let len = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
        (Some(binding), [&magic[..], &len, &json].concat())
    } else if &magic == MAGIC {
        (None, Vec::new())
    } else {
        return Err(refused("not an encrypted snapshot (no header)"));
    };
    let mut prefix = [0u8; NONCE_PREFIX];
    input.read_exact(&mut prefix).map_err(|_| short())?;
    let mut stream = Stream::new(key, prefix, aad);
    let mut output =
        std::io::BufWriter::new(std::fs::File::create(to).map_err(io("cannot create", to))?);
    let mut segment = vec![0u8; SEGMENT + TAG];
    loop {
        let n = read_full(&mut input, &mut segment).map_err(io("cannot read", from))?;
        let last =
            n < segment.len() || input_at_end(&mut input).map_err(io("cannot read", from))?;
        let plain = stream.open(&mut segment[..n], last).ok_or_else(|| {
            refused(if last {
                "wrong key, or the object was altered or cut short"
            } else {
                "wrong key, or the object was altered or reordered"
            })
        })?;
        output.write_all(plain).map_err(io("cannot write", to))?;
        if last {
            break;
        }
    }
    output.flush().map_err(io("cannot write", to))?;
    Ok(binding)
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

fn input_at_end(input: &mut impl std::io::BufRead) -> std::io::Result<bool> {
    Ok(input.fill_buf()?.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn key() -> Key {
        Key::parse(&[7u8; 32], "test").unwrap()
    }

    fn binding() -> Binding {
        Binding { cluster_id: Some("c0ffee".into()), revision: 42, start_time: Some(1_800_000_000) }
    }

    /// The bytes before the first segment.
    fn header_len(sealed: &[u8]) -> usize {
        let len = usize::from(u16::from_be_bytes([sealed[8], sealed[9]]));
        MAGIC_BOUND.len() + 2 + len + NONCE_PREFIX
    }

    async fn seal(data: &[u8], key: &Key) -> Vec<u8> {
        let mut writer = SealingWriter::new(Vec::new(), Some(key), &binding()).unwrap();
        // Odd-sized writes, so that segments are assembled across calls.
        for chunk in data.chunks(10_007) {
            writer.write_all(chunk).await.unwrap();
        }
        writer.shutdown().await.unwrap();
        writer.into_inner()
    }

    fn open_bound(sealed: &[u8], key: &Key) -> Result<(Vec<u8>, Option<Binding>), Error> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("in"), sealed).unwrap();
        let binding = open_file(&dir.path().join("in"), &dir.path().join("out"), key)?;
        Ok((std::fs::read(dir.path().join("out")).unwrap(), binding))
    }

    fn open(sealed: &[u8], key: &Key) -> Result<Vec<u8>, Error> {
        open_bound(sealed, key).map(|(data, _)| data)
    }

    /// The binding comes back as sealed; a changed byte of it and the object no longer opens.
    #[tokio::test]
    async fn the_binding_is_sealed_with_every_segment() {
        let data = vec![7u8; SEGMENT + 3];
        let sealed = seal(&data, &key()).await;
        assert_eq!(open_bound(&sealed, &key()).unwrap(), (data, Some(binding())));
        let text = String::from_utf8_lossy(&sealed[..header_len(&sealed)]).into_owned();
        let at = text.find("42").unwrap();
        let mut rebound = sealed.clone();
        rebound[at] = b'9';
        assert!(matches!(open(&rebound, &key()), Err(Error::Decrypt { .. })));
    }

    #[tokio::test]
    async fn round_trips_at_segment_boundaries() {
        for len in [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT, 3 * SEGMENT + 5] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let sealed = seal(&data, &key()).await;
            assert_ne!(&sealed[header_len(&sealed)..], &data[..], "len {len} is sealed");
            assert_eq!(open(&sealed, &key()).unwrap(), data, "len {len}");
        }
    }

    #[tokio::test]
    async fn a_cut_an_altered_byte_or_another_key_is_refused() {
        let data = vec![42u8; 2 * SEGMENT + 100];
        let sealed = seal(&data, &key()).await;
        let cut = &sealed[..header_len(&sealed) + SEGMENT + TAG];
        assert!(
            matches!(open(cut, &key()), Err(Error::Decrypt { .. })),
            "truncated at a segment boundary"
        );
        let mut altered = sealed.clone();
        altered[header_len(&sealed) + 5] ^= 1;
        assert!(matches!(open(&altered, &key()), Err(Error::Decrypt { .. })));
        let other = Key::parse(&[8u8; 32], "other").unwrap();
        assert!(matches!(open(&sealed, &other), Err(Error::Decrypt { .. })));
    }

    /// Sealed objects written before bindings keep opening: that layout is byte for byte the one
    /// the `aead` crate's `EncryptorBE32` over RustCrypto's AES-256-GCM wrote (digests taken
    /// from it), and opens with no binding.
    #[tokio::test]
    async fn the_layout_is_the_streams_byte_for_byte() {
        for (len, digest) in [
            (20, "398c6dbd25f83a29d41539c2cedc958721a84f92d8cd23f3a95d81841ae1655b"),
            (2 * SEGMENT + 100, "14a3c78b9fa1c352b46e1c800f766e1e762de7c735733fcdfe1a37b86431826d"),
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let prefix = [1, 2, 3, 4, 5, 6, 7];
            let mut writer = SealingWriter::with_prefix(Vec::new(), &key(), prefix, None);
            writer.write_all(&data).await.unwrap();
            writer.shutdown().await.unwrap();
            let sealed = writer.into_inner();
            let got = ring::digest::digest(&ring::digest::SHA256, &sealed);
            let hex: String = got.as_ref().iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(hex, digest, "{len} bytes");
            assert_eq!(open_bound(&sealed, &key()).unwrap(), (data, None));
        }
    }

    #[test]
    fn keys_are_32_bytes_raw_or_base64_and_never_printed() {
        let b64 = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
        assert!(Key::parse(format!("{b64}\n").as_bytes(), "secret").is_ok());
        let err = Key::parse(b"short", "secret/key").unwrap_err().to_string();
        assert!(err.contains("secret/key") && err.contains("32 bytes"), "{err}");
        assert_eq!(format!("{:?}", key()), "Key(<redacted>)");
    }
}
