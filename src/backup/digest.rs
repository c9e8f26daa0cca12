//! SHA-256 and byte count of a stream, computed as the bytes pass (nothing is buffered here).

use std::pin::Pin;
use std::task::{Context, Poll};

use ring::digest;
use tokio::io::AsyncWrite;

/// A running SHA-256 with the number of bytes it has seen.
pub struct Digest {
    context: digest::Context,
    bytes: u64,
}

impl Default for Digest {
    fn default() -> Self {
        Self { context: digest::Context::new(&digest::SHA256), bytes: 0 }
    }
}

impl Digest {
    pub fn update(&mut self, data: &[u8]) {
        self.context.update(data);
        self.bytes += data.len() as u64;
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The checksum as lowercase hexadecimal, as `sha256sum` prints it.
    pub fn hex(self) -> String {
        self.context.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Passes writes through to `inner`, hashing exactly the bytes `inner` accepted.
pub struct HashingWriter<W> {
    inner: W,
    digest: Digest,
}

impl<W> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self { inner, digest: Digest::default() }
    }

    pub fn into_parts(self) -> (W, Digest) {
        (self.inner, self.digest)
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for HashingWriter<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let written = std::task::ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.digest.update(&buf[..written]);
        Poll::Ready(Ok(written))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn hashes_what_passes_through() {
        let mut writer = HashingWriter::new(Vec::new());
        writer.write_all(b"abc").await.unwrap();
        let (inner, digest) = writer.into_parts();
        assert_eq!(inner, b"abc");
        assert_eq!(digest.bytes(), 3);
        // The SHA-256 test vector of "abc" (FIPS 180-2).
        assert_eq!(
            digest.hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
