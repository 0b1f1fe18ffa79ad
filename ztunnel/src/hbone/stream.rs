//! One HTTP/2 stream as a byte pipe: `AsyncRead` + `AsyncWrite` over h2's send and receive
//! halves, with flow-control credit returned as bytes are taken and END_STREAM on shutdown
//! or with the last bytes ([`WriteLast`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use h2::{Reason, RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::WriteLast;

/// The bytes of one CONNECT tunnel, on either end.
///
/// Reading returns end-of-file when the peer half-closes (END_STREAM); `shutdown` half-closes
/// our side the same way. Dropping it before both sides are closed resets the stream.
#[derive(Debug)]
pub struct H2Stream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Received bytes not yet handed to the reader.
    pending: Bytes,
    /// END_STREAM has been sent.
    write_closed: bool,
}

impl H2Stream {
    /// Wraps the two halves of an established tunnel.
    pub fn new(send: SendStream<Bytes>, recv: RecvStream) -> Self {
        Self {
            send,
            recv,
            pending: Bytes::new(),
            write_closed: false,
        }
    }

    /// The error to report once the peer has reset the stream, if it has.
    fn poll_reset_error(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match ready!(self.send.poll_reset(cx)) {
            Ok(reason) => Poll::Ready(reset_error(reason)),
            Err(e) => Poll::Ready(h2_to_io(e)),
        }
    }
}

impl AsyncRead for H2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.pending.is_empty() {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(chunk)) => {
                    // Credit goes back as soon as the chunk leaves h2's buffer: we hold at
                    // most this one chunk, so memory stays bounded by the window.
                    let _ = self.recv.flow_control().release_capacity(chunk.len());
                    self.pending = chunk;
                }
                None => return Poll::Ready(Ok(())),
                Some(Err(e)) if e.reason() == Some(Reason::NO_ERROR) => {
                    return Poll::Ready(Ok(()));
                }
                Some(Err(e)) => return Poll::Ready(Err(h2_to_io(e))),
            }
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending[..n]);
        self.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl H2Stream {
    /// Queues some of `buf` as one DATA frame, with END_STREAM if `last` and it is all of it.
    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
        last: bool,
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if self.write_closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after the tunnel was half-closed",
            )));
        }
        self.send.reserve_capacity(buf.len());
        let granted = loop {
            match self.send.poll_capacity(cx) {
                // Zero means "capacity changed", not "capacity granted": poll again.
                Poll::Ready(Some(Ok(0))) => continue,
                Poll::Ready(Some(Ok(n))) => break n,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(h2_to_io(e))),
                Poll::Ready(None) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the tunnel stream is closed",
                    )));
                }
                // Without credit, a reset would otherwise leave us waiting forever.
                Poll::Pending => return self.poll_reset_error(cx).map(Err),
            }
        };
        let n = granted.min(buf.len());
        let end = last && n == buf.len();
        self.send
            .send_data(Bytes::copy_from_slice(&buf[..n]), end)
            .map_err(h2_to_io)?;
        self.write_closed = end;
        Poll::Ready(Ok(n))
    }
}

impl WriteLast for H2Stream {
    fn poll_write_last(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_send(cx, buf, true)
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_send(cx, buf, false)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection task writes frames as soon as they are queued.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.write_closed {
            self.write_closed = true;
            self.send.send_data(Bytes::new(), true).map_err(h2_to_io)?;
        }
        Poll::Ready(Ok(()))
    }
}

fn reset_error(reason: Reason) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        format!("the peer reset the tunnel stream ({reason})"),
    )
}

/// h2 errors as I/O errors, keeping the underlying I/O error when there is one.
pub(crate) fn h2_to_io(error: h2::Error) -> io::Error {
    if error.is_io() {
        return error
            .into_io()
            .unwrap_or_else(|| io::Error::other("h2 I/O error"));
    }
    let kind = match error.reason() {
        Some(Reason::CANCEL | Reason::REFUSED_STREAM) => io::ErrorKind::ConnectionReset,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, error)
}
