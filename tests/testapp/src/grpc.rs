//! Just enough gRPC for the waypoint's per-request balancing tests: length-prefixed messages,
//! the content type, and `grpc-status` in trailers. Messages are JSON (`application/grpc+json`),
//! so no schema is needed on either side.

use bytes::{BufMut, Bytes, BytesMut};

/// The content type the test client sends and the server answers with.
pub const CONTENT_TYPE: &str = "application/grpc+json";

/// The method path the client uses when its URL names none (`/` or empty).
pub const DEFAULT_METHOD_PATH: &str = "/testapp.TestApp/Echo";

/// The length of the message prefix: a compression flag and a big-endian u32 length.
const PREFIX_LEN: usize = 5;

/// gRPC status `OK`.
pub const STATUS_OK: u32 = 0;

/// The highest gRPC status code (`UNAUTHENTICATED`).
pub const MAX_STATUS: u32 = 16;

/// Why a gRPC body could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The body ends inside the 5-byte prefix or inside the message.
    #[error("gRPC body of {len} bytes is truncated: a message needs {needed} bytes")]
    Truncated {
        /// Bytes present.
        len: usize,
        /// Bytes the prefix announced (prefix included).
        needed: usize,
    },
    /// The peer compressed the message; the test app never negotiates compression.
    #[error("gRPC message is compressed, but no compression was negotiated")]
    Compressed,
}

/// True when a request's `content-type` marks it as gRPC.
pub fn is_grpc_content_type(value: &str) -> bool {
    value == "application/grpc" || value.starts_with("application/grpc+")
}

/// Wraps one uncompressed message in the gRPC length prefix.
pub fn encode_message(message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(PREFIX_LEN + message.len());
    framed.put_u8(0);
    // Messages here are small JSON documents; the server caps bodies far below 4 GiB.
    framed.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    framed.put_slice(message);
    framed.freeze()
}

/// Reads the first message of a gRPC body; `Ok(None)` for an empty body (a trailers-only reply).
pub fn decode_first_message(body: &[u8]) -> Result<Option<&[u8]>, FrameError> {
    if body.is_empty() {
        return Ok(None);
    }
    let Some(prefix) = body.get(..PREFIX_LEN) else {
        return Err(FrameError::Truncated {
            len: body.len(),
            needed: PREFIX_LEN,
        });
    };
    if prefix[0] != 0 {
        return Err(FrameError::Compressed);
    }
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    let needed = PREFIX_LEN.saturating_add(len);
    body.get(PREFIX_LEN..needed)
        .map(Some)
        .ok_or(FrameError::Truncated {
            len: body.len(),
            needed,
        })
}

/// The gRPC status that corresponds to an HTTP status (the mapping of gRPC's
/// `http-grpc-status-mapping.md`, with 2xx as OK and anything unlisted as UNKNOWN).
pub fn status_for_http(status: u16) -> u32 {
    match status {
        200..=299 => STATUS_OK,
        400 => 13,             // INTERNAL
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        404 => 12,             // UNIMPLEMENTED
        429 | 502..=504 => 14, // UNAVAILABLE
        _ => 2,                // UNKNOWN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let framed = encode_message(b"{\"a\":1}");
        assert_eq!(&framed[..5], &[0, 0, 0, 0, 7]);
        assert_eq!(decode_first_message(&framed), Ok(Some(&b"{\"a\":1}"[..])));
        assert_eq!(decode_first_message(b""), Ok(None));
    }

    #[test]
    fn broken_bodies_are_reported() {
        assert_eq!(
            decode_first_message(&[0, 0, 0]),
            Err(FrameError::Truncated { len: 3, needed: 5 })
        );
        assert_eq!(
            decode_first_message(&[0, 0, 0, 0, 9, b'x']),
            Err(FrameError::Truncated { len: 6, needed: 14 })
        );
        assert_eq!(
            decode_first_message(&[1, 0, 0, 0, 0]),
            Err(FrameError::Compressed)
        );
    }

    #[test]
    fn content_types_and_statuses() {
        assert!(is_grpc_content_type("application/grpc"));
        assert!(is_grpc_content_type("application/grpc+proto"));
        assert!(!is_grpc_content_type("application/grpc-web"));
        assert!(!is_grpc_content_type("application/json"));
        assert_eq!(status_for_http(200), STATUS_OK);
        assert_eq!(status_for_http(503), 14);
        assert_eq!(status_for_http(500), 2);
    }
}
