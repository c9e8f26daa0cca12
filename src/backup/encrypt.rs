//! Client-side encryption of snapshots: AES-256-GCM in the STREAM construction (aead's
//! `EncryptorBE32`), so that a snapshot of any size is sealed in segments as it streams, and a
//! truncated, reordered or altered object fails to open.
//!
//! Layout: `MAGIC`, a 7-byte random nonce prefix, then segments of `SEGMENT` plaintext bytes
//! sealed with a 16-byte tag each; the final segment (0..=SEGMENT bytes) is sealed as the last,
//! which is how a reader knows nothing was cut off.

use std::io::{Read, Write};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use aes_gcm::aead::KeyInit;
use aes_gcm::aead::stream::{DecryptorBE32, EncryptorBE32};
use aes_gcm::{Aes256Gcm, Key as AesKey};
use base64::Engine;
use tokio::io::AsyncWrite;

use super::Error;

/// Environment variable holding a key (raw or base64), filled from a Secret in pods.
pub const KEY_ENV: &str = "ETCD_OPERATOR_ENCRYPTION_KEY";

const MAGIC: &[u8; 8] = b"ETCDOPE1";
const NONCE_PREFIX: usize = 7;
const SEGMENT: usize = 64 * 1024;
const TAG: usize = 16;

/// A 256-bit key. `Debug` never shows it.
#[derive(Clone)]
pub struct Key(AesKey<Aes256Gcm>);

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
        Ok(Self(*AesKey::<Aes256Gcm>::from_slice(&raw)))
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

/// Seals what is written to it into `inner`; with no key it passes bytes through unchanged.
pub struct SealingWriter<W> {
    inner: W,
    sealing: Option<Sealing>,
}

struct Sealing {
    encryptor: Option<EncryptorBE32<Aes256Gcm>>,
    plain: Vec<u8>,
    /// Sealed bytes not yet taken by `inner`, from `sent` on.
    out: Vec<u8>,
    sent: usize,
}

impl<W> SealingWriter<W> {
    pub fn new(inner: W, key: Option<&Key>) -> Result<Self, Error> {
        let Some(key) = key else { return Ok(Self { inner, sealing: None }) };
        let mut prefix = [0u8; NONCE_PREFIX];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut prefix).map_err(
            |_| Error::BadKey {
                origin: "the system".into(),
                reason: "no randomness for a nonce".into(),
            },
        )?;
        let encryptor = EncryptorBE32::from_aead(Aes256Gcm::new(&key.0), (&prefix).into());
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&prefix);
        let sealing = Sealing {
            encryptor: Some(encryptor),
            plain: Vec::with_capacity(SEGMENT),
            out,
            sent: 0,
        };
        Ok(Self { inner, sealing: Some(sealing) })
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

fn sealing_failed() -> std::io::Error {
    std::io::Error::other("AES-GCM sealing failed (segment counter exhausted)")
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
        if sealing.plain.len() == SEGMENT {
            // A full segment with more data coming: it is not the last one.
            let encryptor = sealing.encryptor.as_mut().ok_or_else(sealing_failed)?;
            sealing.out =
                encryptor.encrypt_next(sealing.plain.as_slice()).map_err(|_| sealing_failed())?;
            sealing.plain.clear();
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
            && let Some(encryptor) = sealing.encryptor.take()
        {
            sealing.out =
                encryptor.encrypt_last(sealing.plain.as_slice()).map_err(|_| sealing_failed())?;
            sealing.plain.clear();
            ready!(self.poll_drain(cx))?;
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Whether `header` (the first 8 bytes of an object) starts a sealed snapshot.
pub fn is_sealed_header(header: &[u8]) -> bool {
    header.starts_with(MAGIC)
}

/// Opens a sealed file into `to`. Blocking: run it off the async runtime.
pub fn open_file(from: &Path, to: &Path, key: &Key) -> Result<(), Error> {
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
    let mut header = [0u8; MAGIC.len() + NONCE_PREFIX];
    input.read_exact(&mut header).map_err(|_| refused("too short to be an encrypted snapshot"))?;
    if &header[..MAGIC.len()] != MAGIC {
        return Err(refused("not an encrypted snapshot (no header)"));
    }
    let prefix: [u8; NONCE_PREFIX] =
        header[MAGIC.len()..].try_into().map_err(|_| refused("bad header"))?;
    let mut decryptor = DecryptorBE32::from_aead(Aes256Gcm::new(&key.0), (&prefix).into());
    let mut output =
        std::io::BufWriter::new(std::fs::File::create(to).map_err(io("cannot create", to))?);
    let mut segment = vec![0u8; SEGMENT + TAG];
    loop {
        let n = read_full(&mut input, &mut segment).map_err(io("cannot read", from))?;
        let last =
            n < segment.len() || input_at_end(&mut input).map_err(io("cannot read", from))?;
        if last {
            let plain = decryptor
                .decrypt_last(&segment[..n])
                .map_err(|_| refused("wrong key, or the object was altered or cut short"))?;
            output.write_all(&plain).map_err(io("cannot write", to))?;
            break;
        }
        let plain = decryptor
            .decrypt_next(&segment[..n])
            .map_err(|_| refused("wrong key, or the object was altered or reordered"))?;
        output.write_all(&plain).map_err(io("cannot write", to))?;
    }
    output.flush().map_err(io("cannot write", to))?;
    Ok(())
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

    async fn seal(data: &[u8], key: &Key) -> Vec<u8> {
        let mut writer = SealingWriter::new(Vec::new(), Some(key)).unwrap();
        // Odd-sized writes, so that segments are assembled across calls.
        for chunk in data.chunks(10_007) {
            writer.write_all(chunk).await.unwrap();
        }
        writer.shutdown().await.unwrap();
        writer.into_inner()
    }

    fn open(sealed: &[u8], key: &Key) -> Result<Vec<u8>, Error> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("in"), sealed).unwrap();
        open_file(&dir.path().join("in"), &dir.path().join("out"), key)?;
        Ok(std::fs::read(dir.path().join("out")).unwrap())
    }

    #[tokio::test]
    async fn round_trips_at_segment_boundaries() {
        for len in [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT, 3 * SEGMENT + 5] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let sealed = seal(&data, &key()).await;
            assert_ne!(&sealed[MAGIC.len() + NONCE_PREFIX..], &data[..], "len {len} is sealed");
            assert_eq!(open(&sealed, &key()).unwrap(), data, "len {len}");
        }
    }

    #[tokio::test]
    async fn a_cut_an_altered_byte_or_another_key_is_refused() {
        let data = vec![42u8; 2 * SEGMENT + 100];
        let sealed = seal(&data, &key()).await;
        let cut = &sealed[..MAGIC.len() + NONCE_PREFIX + SEGMENT + TAG];
        assert!(
            matches!(open(cut, &key()), Err(Error::Decrypt { .. })),
            "truncated at a segment boundary"
        );
        let mut altered = sealed.clone();
        altered[MAGIC.len() + NONCE_PREFIX + 5] ^= 1;
        assert!(matches!(open(&altered, &key()), Err(Error::Decrypt { .. })));
        let other = Key::parse(&[8u8; 32], "other").unwrap();
        assert!(matches!(open(&sealed, &other), Err(Error::Decrypt { .. })));
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
