//! Copying a tunnel's bytes both ways without a buffer per idle connection.
//!
//! `tokio::io::copy_bidirectional_with_sizes` gives every connection two heap buffers for its
//! whole life (2 x 16 KiB here), whether bytes flow or not; with thousands of mostly idle
//! connections that is most of the proxy's memory. Here each read lands in a buffer on the
//! polling thread's stack and is written on at once; only the bytes a writer refuses (it
//! pushed back) are kept on the heap, in an allocation of exactly their size that is freed as
//! soon as they are written. An idle connection holds no buffer at all, a busy one reads and
//! writes [`COPY_BUFFER_SIZE`] bytes at a time as before, and no byte is copied more often
//! than with a fixed buffer except the leftover of a refused write.
//!
//! The semantics are `copy_bidirectional`'s: when one side reaches end-of-file the other
//! side's write half is flushed and shut down (the half-close travels on) and the other
//! direction carries on; the future completes when both directions are done, or with the
//! first error.
//!
//! A short read is followed at once by another: it costs no system call (tokio has marked
//! the drained socket not ready, an HTTP/2 stream has nothing buffered) unless more bytes or
//! the end-of-file are already there. So a reply that comes with its end (a server that
//! answers and closes) is read whole with its end-of-file, and [`copy_with_tunnel`] sends
//! the two as one DATA frame with END_STREAM ([`WriteLast`]) instead of a DATA frame and an
//! empty one: one TLS record and one write on the node link instead of two, and the far
//! ztunnel hands the app its bytes and its end-of-file together, so the connection closes
//! in the order it would without the mesh.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use std::os::fd::AsRawFd;

use nix::sys::socket::{MsgFlags, send};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use super::COPY_BUFFER_SIZE;

/// Copies between `a` and `b` until both directions have ended; returns the bytes copied
/// (a to b, b to a).
pub async fn copy_bidirectional<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    copy_both_ways(&mut Plain(a), &mut Plain(b)).await
}

/// [`copy_bidirectional`] between an app's connection and a tunnel, each of which can send
/// its last bytes with its end ([`WriteLast`]); returns the bytes copied (app to tunnel,
/// tunnel to app).
pub async fn copy_with_tunnel<A, T>(app: &mut A, tunnel: &mut T) -> io::Result<(u64, u64)>
where
    A: AsyncRead + WriteLast + ?Sized,
    T: AsyncRead + WriteLast + ?Sized,
{
    copy_both_ways(app, tunnel).await
}

/// A writer that can send its last bytes and its end-of-file as one message.
pub trait WriteLast: AsyncWrite + Unpin {
    /// Writes some of `data` like `poll_write`, as the last bytes before `poll_shutdown`: a
    /// writer that can holds them so that they leave with its end-of-file.
    fn poll_write_last(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>>;
}

/// Sent with `MSG_MORE`, the last bytes wait in the socket for the FIN that `shutdown` adds
/// to them: the app reads its answer and the end-of-file at once, and closes second, as it
/// would have without the mesh (the TIME_WAIT stays with the side that closed first).
impl WriteLast for TcpStream {
    fn poll_write_last(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.poll_write_ready(cx))?;
            let sent = self.try_io(Interest::WRITABLE, || {
                // nix names no `MSG_MORE`; the flag is Linux's own.
                let more = MsgFlags::from_bits_retain(nix::libc::MSG_MORE);
                send(self.as_raw_fd(), data, more | MsgFlags::MSG_NOSIGNAL).map_err(io::Error::from)
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }
}

/// Any reader and writer, whose end-of-file goes by `poll_shutdown` on its own.
pub struct Plain<'a, T: ?Sized>(pub &'a mut T);

impl<T: AsyncRead + Unpin + ?Sized> AsyncRead for Plain<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin + ?Sized> AsyncWrite for Plain<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl<T: AsyncWrite + Unpin + ?Sized> WriteLast for Plain<'_, T> {
    fn poll_write_last(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write(cx, data)
    }
}

async fn copy_both_ways<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + WriteLast + ?Sized,
    B: AsyncRead + WriteLast + ?Sized,
{
    let mut a_to_b = Direction::default();
    let mut b_to_a = Direction::default();
    poll_fn(|cx| {
        let forward = a_to_b.poll(cx, &mut *a, &mut *b)?;
        let backward = b_to_a.poll(cx, &mut *b, &mut *a)?;
        match (forward, backward) {
            (Poll::Ready(sent), Poll::Ready(received)) => Poll::Ready(Ok((sent, received))),
            _ => Poll::Pending,
        }
    })
    .await
}

/// Where one direction stands.
#[derive(Debug, Default, PartialEq, Eq)]
enum Stage {
    /// Reading and writing.
    #[default]
    Copying,
    /// The reader reached end-of-file and everything was written: shut the writer down.
    ShuttingDown,
    /// Finished.
    Done,
}

/// One direction of the copy. Holds no buffer unless a writer pushed back.
#[derive(Debug, Default)]
struct Direction {
    stage: Stage,
    /// Bytes read but refused by the writer; empty (no allocation) otherwise.
    pending: Vec<u8>,
    /// How much of `pending` has been written since.
    written: usize,
    /// The reader reached end-of-file.
    read_done: bool,
    /// Bytes were written since the last flush.
    need_flush: bool,
    /// Bytes copied.
    amount: u64,
}

impl Direction {
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: WriteLast + ?Sized,
    {
        loop {
            match self.stage {
                Stage::Copying => {
                    ready!(self.poll_copy(cx, Pin::new(&mut *reader), Pin::new(&mut *writer)))?;
                    self.stage = Stage::ShuttingDown;
                }
                Stage::ShuttingDown => {
                    ready!(Pin::new(&mut *writer).poll_shutdown(cx))?;
                    self.stage = Stage::Done;
                }
                Stage::Done => return Poll::Ready(Ok(self.amount)),
            }
        }
    }

    /// Copies until the reader's end-of-file has been written and flushed.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: WriteLast + ?Sized,
    {
        // Take part in the runtime's budget like tokio's own copy, so a stream that is
        // always ready cannot keep its worker from the other tasks.
        let coop = ready!(tokio::task::coop::poll_proceed(cx));
        loop {
            // First what the writer refused last time.
            while self.written < self.pending.len() {
                let n = ready!(poll_write(
                    cx,
                    writer.as_mut(),
                    &self.pending[self.written..],
                    self.read_done,
                ))?;
                coop.made_progress();
                self.written += n;
                self.amount += n as u64;
                self.need_flush = true;
            }
            if !self.pending.is_empty() {
                // Free it: an idle connection keeps no buffer.
                self.pending = Vec::new();
                self.written = 0;
            }
            if self.read_done {
                ready!(writer.as_mut().poll_flush(cx))?;
                return Poll::Ready(Ok(()));
            }

            let mut chunk = [MaybeUninit::<u8>::uninit(); COPY_BUFFER_SIZE];
            let mut buf = ReadBuf::uninit(&mut chunk);
            match poll_read(cx, reader.as_mut(), &mut buf) {
                Poll::Ready(Ok(())) => coop.made_progress(),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // Nothing to read: make sure what was written does not sit in a
                    // buffered writer while we wait.
                    if self.need_flush {
                        ready!(writer.as_mut().poll_flush(cx))?;
                        self.need_flush = false;
                    }
                    return Poll::Pending;
                }
            }
            if buf.filled().is_empty() {
                self.read_done = true;
                continue;
            }
            // Read on while more is there at once (see the module's notes): no system call
            // when it is not, and an end-of-file that is already there goes out with the data.
            while buf.remaining() > 0 {
                let before = buf.filled().len();
                match poll_read(cx, reader.as_mut(), &mut buf) {
                    Poll::Ready(Ok(())) if buf.filled().len() == before => {
                        self.read_done = true;
                        break;
                    }
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => break,
                }
            }
            let data = buf.filled();
            let mut offset = 0;
            while offset < data.len() {
                match poll_write(cx, writer.as_mut(), &data[offset..], self.read_done) {
                    Poll::Ready(Ok(n)) => {
                        offset += n;
                        self.amount += n as u64;
                        self.need_flush = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        // The writer pushed back: keep the rest, exactly its size, until it
                        // wakes us.
                        self.pending = data[offset..].to_vec();
                        self.written = 0;
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

/// Reads, retrying on `Interrupted`.
fn poll_read<R: AsyncRead + ?Sized>(
    cx: &mut Context<'_>,
    mut reader: Pin<&mut R>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    loop {
        match reader.as_mut().poll_read(cx, buf) {
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Writes some of `data` (the last of the stream when `last`), retrying on `Interrupted`; a
/// writer that takes nothing is an error.
fn poll_write<W: WriteLast + ?Sized>(
    cx: &mut Context<'_>,
    mut writer: Pin<&mut W>,
    data: &[u8],
    last: bool,
) -> Poll<io::Result<usize>> {
    loop {
        let written = if last {
            writer.as_mut().poll_write_last(cx, data)
        } else {
            writer.as_mut().poll_write(cx, data)
        };
        match written {
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Poll::Ready(Ok(0)) => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the writer accepted no bytes",
                )));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    /// Both directions arrive whole and in order, half-closes travel on, and the counts are
    /// right, also when the pipes are much smaller than the chunk (constant pushback).
    #[tokio::test]
    async fn copies_both_ways_through_pushback() {
        for pipe in [7, 1024, 64 * 1024] {
            let (client, mut proxy_a) = duplex(pipe);
            let (mut proxy_b, mut server) = duplex(pipe);
            let copy =
                tokio::spawn(async move { copy_bidirectional(&mut proxy_a, &mut proxy_b).await });
            let up: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
            let down: Vec<u8> = (0..150_000u32).map(|i| (i % 241) as u8).collect();
            let (up2, down2) = (up.clone(), down.clone());
            let client_side = tokio::spawn(async move {
                let (mut read, mut write) = tokio::io::split(client);
                let writer = tokio::spawn(async move {
                    write.write_all(&up2).await.unwrap();
                    write.shutdown().await.unwrap();
                });
                let mut got = Vec::new();
                read.read_to_end(&mut got).await.unwrap();
                writer.await.unwrap();
                got
            });
            let mut got_up = Vec::new();
            let (mut read, mut write) = tokio::io::split(&mut server);
            let (read_result, write_result) = tokio::join!(read.read_to_end(&mut got_up), async {
                write.write_all(&down2).await?;
                write.shutdown().await
            });
            read_result.unwrap();
            write_result.unwrap();
            let got_down = client_side.await.unwrap();
            assert_eq!(got_up, up, "pipe {pipe}: client to server");
            assert_eq!(got_down, down, "pipe {pipe}: server to client");
            let (sent, received) = tokio::time::timeout(Duration::from_secs(5), copy)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!((sent, received), (up.len() as u64, down.len() as u64));
        }
    }

    /// One side half-closing does not stop the other direction.
    #[tokio::test]
    async fn half_close_keeps_the_other_direction_open() {
        let (mut client, mut proxy_a) = duplex(1024);
        let (mut proxy_b, mut server) = duplex(1024);
        let copy =
            tokio::spawn(async move { copy_bidirectional(&mut proxy_a, &mut proxy_b).await });
        client.write_all(b"request").await.unwrap();
        client.shutdown().await.unwrap();
        let mut request = Vec::new();
        server.read_to_end(&mut request).await.unwrap();
        assert_eq!(request, b"request");
        // The server answers after the client's half-close.
        server.write_all(b"response").await.unwrap();
        server.shutdown().await.unwrap();
        let mut response = Vec::new();
        client.read_to_end(&mut response).await.unwrap();
        assert_eq!(response, b"response");
        assert_eq!(copy.await.unwrap().unwrap(), (7, 8));
    }

    /// An idle copy holds no heap buffer: the state of both directions is a few words.
    #[test]
    fn an_idle_direction_holds_no_buffer() {
        let direction = Direction::default();
        assert_eq!(direction.pending.capacity(), 0);
        assert!(std::mem::size_of::<Direction>() <= 64);
    }

    /// What a tunnel was asked to write: each write's bytes, whether it was the last, and
    /// whether the tunnel was shut down.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<(Vec<u8>, bool)>,
        shut_down: bool,
    }

    impl AsyncRead for Recorder {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            _buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.push((data.to_vec(), false));
            Poll::Ready(Ok(data.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shut_down = true;
            Poll::Ready(Ok(()))
        }
    }

    impl WriteLast for Recorder {
        fn poll_write_last(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.push((data.to_vec(), true));
            Poll::Ready(Ok(data.len()))
        }
    }

    /// An app that answers and closes at once has its answer and its end-of-file sent as one
    /// last write, also when the app wrote it in two pieces; one that keeps its connection
    /// open has its bytes sent as plain writes and the end on its own.
    #[tokio::test]
    async fn an_answer_and_its_end_go_to_the_tunnel_together() {
        let (mut app, mut proxy_side) = duplex(1024);
        app.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        app.write_all(b"body").await.unwrap();
        app.shutdown().await.unwrap();
        let mut tunnel = Recorder::default();
        let counts = copy_with_tunnel(&mut Plain(&mut proxy_side), &mut tunnel)
            .await
            .unwrap();
        assert_eq!(counts, (23, 0));
        assert_eq!(
            tunnel.writes,
            vec![(b"HTTP/1.1 200 OK\r\n\r\nbody".to_vec(), true)],
            "one last write carries the whole answer"
        );

        let (mut app, mut proxy_side) = duplex(1024);
        app.write_all(b"first").await.unwrap();
        let mut tunnel = Recorder::default();
        let copy = tokio::spawn(async move {
            copy_with_tunnel(&mut Plain(&mut proxy_side), &mut tunnel)
                .await
                .unwrap();
            tunnel
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        app.shutdown().await.unwrap();
        let tunnel = tokio::time::timeout(Duration::from_secs(5), copy)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(tunnel.writes, vec![(b"first".to_vec(), false)]);
        assert!(tunnel.shut_down, "the end-of-file still reaches the tunnel");
    }

    /// An error on one side ends the copy with that error.
    #[tokio::test]
    async fn an_error_ends_the_copy() {
        let (mut client, mut proxy_a) = duplex(1024);
        let (mut proxy_b, server) = duplex(1024);
        drop(server);
        client.write_all(b"into a closed pipe").await.unwrap();
        let result = tokio::time::timeout(
            Duration::from_secs(5),
            copy_bidirectional(&mut proxy_a, &mut proxy_b),
        )
        .await
        .expect("the copy ends");
        assert!(
            result.is_err(),
            "writing to a closed pipe fails the copy: {result:?}"
        );
    }
}
