//! HTTP bodies as they move through the layers: one boxed type for every layer, and the
//! few wrappers the layers need (buffering for retries and mirrors, byte counting, a value
//! held until the body is done, a deadline).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// Errors that end a body stream, whatever produced them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type every layer takes and returns.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body of `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Any body, boxed.
pub fn boxed<B>(body: B) -> Body
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A request body read into memory, so it can be sent more than once.
#[derive(Clone, Debug, Default)]
pub struct BufferedBody {
    chunks: Arc<[Bytes]>,
    trailers: Option<HeaderMap>,
    len: u64,
}

impl BufferedBody {
    /// A fresh body with the same bytes and trailers.
    pub fn replay(&self) -> Body {
        ReplayBody {
            chunks: self.chunks.iter().cloned().collect(),
            trailers: self.trailers.clone(),
            remaining: self.len,
        }
        .boxed_unsync()
    }

    /// Bytes of data.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether there is no data.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The result of trying to buffer a body.
pub enum Buffering {
    /// The whole body, in memory.
    Complete(BufferedBody),
    /// The body is longer than the limit: what was read, followed by the rest, as one body
    /// that can be sent once.
    TooLarge(Body),
}

/// Reads `body` into memory unless it is longer than `limit` bytes.
pub async fn buffer(mut body: Body, limit: u64) -> Result<Buffering, BoxError> {
    if body.size_hint().lower() > limit {
        return Ok(Buffering::TooLarge(body));
    }
    let mut chunks = Vec::new();
    let mut len = 0u64;
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        match frame.into_data() {
            Ok(data) => {
                len += data.len() as u64;
                chunks.push(data);
                if len > limit {
                    let prefix = PrefixedBody {
                        prefix: chunks.into(),
                        rest: body,
                    };
                    return Ok(Buffering::TooLarge(prefix.boxed_unsync()));
                }
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = Some(t);
                }
            }
        }
    }
    Ok(Buffering::Complete(BufferedBody {
        chunks: chunks.into(),
        trailers,
        len,
    }))
}

struct ReplayBody {
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    remaining: u64,
}

impl HttpBody for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            self.remaining -= chunk.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

struct PrefixedBody {
    prefix: VecDeque<Bytes>,
    rest: Body,
}

impl HttpBody for PrefixedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(chunk) = self.prefix.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.rest.is_end_stream()
    }
}

/// Counts the data bytes that pass through a body.
pub struct CountingBody<B> {
    inner: B,
    count: Arc<AtomicU64>,
}

impl<B> CountingBody<B> {
    /// Wraps `inner`, adding every data byte to `count`.
    pub fn new(inner: B, count: Arc<AtomicU64>) -> Self {
        Self { inner, count }
    }
}

impl<B: HttpBody<Data = Bytes> + Unpin> HttpBody for CountingBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Keeps a value alive for as long as the body: whatever it records on drop is recorded
/// when the body is done or abandoned.
pub struct HoldingBody<G> {
    inner: Body,
    _held: G,
}

impl<G: Send + Unpin + 'static> HoldingBody<G> {
    /// `inner`, holding `held` until dropped.
    pub fn wrap(inner: Body, held: G) -> Body {
        Self { inner, _held: held }.boxed_unsync()
    }
}

impl<G: Unpin> HttpBody for HoldingBody<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The error a body ends with when its deadline passes.
#[derive(Debug, thiserror::Error)]
#[error("the response body did not complete before the request deadline")]
pub struct BodyDeadlineExceeded;

/// Ends a body with [`BodyDeadlineExceeded`] if it is not complete by a deadline.
pub struct DeadlineBody {
    inner: Body,
    sleep: Pin<Box<Sleep>>,
}

impl DeadlineBody {
    /// `inner`, cut off at `deadline`.
    pub fn wrap(inner: Body, deadline: Instant) -> Body {
        Self {
            inner,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
        }
        .boxed_unsync()
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        ready!(self.sleep.as_mut().poll(cx));
        Poll::Ready(Some(Err(Box::new(BodyDeadlineExceeded))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
