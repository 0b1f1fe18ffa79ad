//! The response body as the client receives it, with the request's record: counts the bytes
//! sent, reads a gRPC response's `grpc-status` from its trailers as they pass (nothing is
//! buffered), and records the request when the body is done or dropped.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::{RequestRecord, grpc_status};
use crate::body::{Body, BoxError};

/// See the module documentation.
pub struct RecordingBody {
    inner: Body,
    record: RequestRecord,
}

impl RecordingBody {
    /// `inner`, recorded in `record`.
    pub fn wrap(inner: Body, record: RequestRecord) -> Body {
        Self { inner, record }.boxed_unsync()
    }
}

impl HttpBody for RecordingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame {
            if let Some(data) = frame.data_ref() {
                self.record
                    .response_bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
            } else if let Some(trailers) = frame.trailers_ref()
                && self.record.protocol == "grpc"
                && let Some(status) = grpc_status(trailers)
            {
                self.record.grpc_status = Some(status);
            }
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
