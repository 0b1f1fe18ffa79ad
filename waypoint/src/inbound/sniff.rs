//! Protocol detection on a fresh tunnel: the HTTP/2 connection preface, an HTTP/1.x request
//! line, or anything else (proxied as opaque TCP). The bytes read to decide are returned so
//! that whoever serves the stream sees them again ([`Rewind`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// What a tunnel carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.0 or HTTP/1.1.
    Http1,
    /// HTTP/2 with prior knowledge (gRPC among it).
    Http2,
    /// Anything else, or a client that did not speak first.
    Opaque,
}

/// The HTTP/2 client connection preface (RFC 9113 section 3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The longest method token we take for an HTTP/1 request line when sniffing.
const MAX_METHOD_LEN: usize = 20;

/// The protocol `bytes` start with, or `None` when more bytes are needed to tell.
pub fn classify(bytes: &[u8]) -> Option<Protocol> {
    if bytes.is_empty() {
        return None;
    }
    if bytes.starts_with(H2_PREFACE) {
        return Some(Protocol::Http2);
    }
    if H2_PREFACE.starts_with(bytes) {
        return None;
    }
    let method = bytes.iter().take_while(|b| b.is_ascii_uppercase()).count();
    if method == bytes.len() {
        return (method > MAX_METHOD_LEN).then_some(Protocol::Opaque);
    }
    if (1..=MAX_METHOD_LEN).contains(&method) && bytes[method] == b' ' {
        Some(Protocol::Http1)
    } else {
        Some(Protocol::Opaque)
    }
}

/// Reads from `io` until the protocol is known. A client that sends nothing within
/// `timeout` (a server-first protocol) or closes early is treated as opaque.
pub async fn sniff<T: AsyncRead + Unpin>(
    io: &mut T,
    timeout: Duration,
) -> io::Result<(Protocol, Bytes)> {
    let mut buf = BytesMut::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(protocol) = classify(&buf) {
            return Ok((protocol, buf.freeze()));
        }
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => return Ok((Protocol::Opaque, buf.freeze())),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// A stream that first replays the bytes sniffing consumed.
#[derive(Debug)]
pub struct Rewind<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    /// `inner`, with `prefix` read first.
    pub fn new(prefix: Bytes, inner: T) -> Self {
        Self { prefix, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_preface_request_lines_and_others() {
        assert_eq!(classify(H2_PREFACE), Some(Protocol::Http2));
        assert_eq!(classify(&H2_PREFACE[..10]), None);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(classify(b"POST"), None);
        assert_eq!(classify(b"DELETE /x"), Some(Protocol::Http1));
        assert_eq!(
            classify(b"\x16\x03\x01"),
            Some(Protocol::Opaque),
            "a TLS client hello"
        );
        assert_eq!(classify(b"get / HTTP/1.1"), Some(Protocol::Opaque));
        assert_eq!(classify(b""), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_opaque_after_the_timeout() {
        let (mut ours, _theirs) = tokio::io::duplex(64);
        let (protocol, prefix) = sniff(&mut ours, Duration::from_secs(1)).await.unwrap();
        assert_eq!(protocol, Protocol::Opaque);
        assert!(prefix.is_empty());
    }

    #[tokio::test]
    async fn rewind_replays_the_sniffed_bytes() {
        let (mut ours, mut theirs) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut theirs, b"GET / HTTP/1.1\r\n")
            .await
            .unwrap();
        drop(theirs);
        let (protocol, prefix) = sniff(&mut ours, Duration::from_secs(1)).await.unwrap();
        assert_eq!(protocol, Protocol::Http1);
        let mut all = Vec::new();
        Rewind::new(prefix, ours)
            .read_to_end(&mut all)
            .await
            .unwrap();
        assert_eq!(all, b"GET / HTTP/1.1\r\n");
    }
}
