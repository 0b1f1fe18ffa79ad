//! HBONE: HTTP/2 CONNECT tunnels inside mutual TLS (see `crate::tls`).
//!
//! The wire is Istio's (DESIGN.md, "Wire contract"): a CONNECT request with
//! `:authority ip:port`, the `forwarded`, `baggage` and `traceparent` headers passed through,
//! 200 on success, 400 for a malformed request, 401 for a policy deny, 503 when the target is
//! unknown or unreachable, and END_STREAM as the half-close.
//!
//! The `h2` crate is used directly rather than through hyper so that window sizes, frame sizes
//! and flood limits are chosen here, on purpose, for both ends.

pub mod client;
mod copy;
mod metrics;
mod pool;
pub mod server;
mod stream;

#[cfg(test)]
mod test_mesh;
#[cfg(test)]
mod tests;

use std::time::Duration;

use http::HeaderName;

pub use client::{ClientSettings, HboneClient, HboneError, HboneStream, TunnelRequest};
pub use copy::{WriteLast, copy_bidirectional, copy_with_tunnel};
pub use metrics::{ClientMetrics, ServerMetrics};
pub use pool::{Dialer, direct_dialer};
pub use server::{
    ConnectDecision, ConnectHandler, ConnectRequest, HboneServer, Rejection, ServerConfigSelector,
    ServerError, ServerSettings, TunnelOutcome, TunnelService, Upstream,
};
pub use stream::H2Stream;

/// The port every HBONE server listens on.
pub const HBONE_PORT: u16 = 15008;

/// The headers a tunnel carries end to end; everything else on the CONNECT is informational.
pub const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
/// W3C baggage, passed through untouched.
pub const BAGGAGE: HeaderName = HeaderName::from_static("baggage");
/// W3C trace context, passed through untouched.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Initial flow-control window of each stream (SETTINGS_INITIAL_WINDOW_SIZE).
///
/// One tunnel must be able to fill the path on its own: at 10 Gbit/s and a 1 ms round trip
/// through two proxies the bandwidth-delay product is ~1.25 MB, and HTTP/2's 64 KiB default
/// would cap a stream at 64 KiB per round trip. 4 MiB leaves headroom for slower round trips.
/// It is credit, not an allocation: memory is only used when the reader falls behind.
pub const STREAM_WINDOW: u32 = 4 * 1024 * 1024;

/// Flow-control window of the whole connection.
///
/// Four streams at full window (the 4-stream benchmark) before the connection window, rather
/// than the stream windows, becomes the limit; it also bounds what one peer can make us
/// buffer across all of its streams.
pub const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

/// The largest frame we accept (SETTINGS_MAX_FRAME_SIZE).
///
/// Big frames cost nothing extra in memory (the windows above already bound what a peer may
/// send) and let a large write travel as one frame instead of sixty-four 16 KiB ones.
pub const MAX_FRAME_SIZE: u32 = 1024 * 1024;

/// The largest header block we accept (SETTINGS_MAX_HEADER_LIST_SIZE).
///
/// A CONNECT with its authority and trace headers is well under 1 KiB; W3C baggage may be
/// up to 8 KiB. 16 KiB allows that and bounds header memory per stream.
pub const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;

/// Streams a server lets one connection run at once (SETTINGS_MAX_CONCURRENT_STREAMS).
///
/// Equal to the client's pool limit (`ClientSettings::max_streams_per_connection`), so a
/// pooled connection never queues on the server's limit, and a peer cannot make us run more
/// than this many handlers per connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 100;

/// Streams a peer may open and reset before we accept them (CVE-2023-44487, rapid reset).
///
/// A legitimate client cancels a handful of streams in the instant before the server picks
/// them up; 50 queued resets is the flood pattern, and the connection is closed with
/// ENHANCE_YOUR_CALM.
pub const MAX_PENDING_ACCEPT_RESETS: usize = 50;

/// Streams we may reset because of a peer's protocol errors before closing the connection.
///
/// A correct peer causes none; 100 leaves room for a buggy one and stops a peer that makes
/// us do the work of resets in a loop (h2's default is 1024).
pub const MAX_LOCAL_ERROR_RESETS: usize = 100;

/// Bytes each direction of a tunnel reads or writes at a time.
///
/// Large reads and writes mean fewer system calls per byte on the plain side (iperf3 writes
/// 128 KiB at a time); a read from the app becomes one DATA frame (our peers accept frames up
/// to [`MAX_FRAME_SIZE`]), and 64 KiB less the 9-byte frame header lets a full frame fill
/// four whole 16 KiB TLS records instead of spilling a few bytes into a fifth. In the lab
/// (tests/BENCHMARKS.md) one stream carries about a fifth more than with 16 KiB. The chunk
/// lives on the polling thread's stack, not in the connection ([`copy_bidirectional`]): an
/// idle tunnel holds no copy buffer at all.
pub const COPY_BUFFER_SIZE: usize = 64 * 1024 - 9;

/// How long a dial (TCP connect, TLS handshake, HTTP/2 preface) or a TLS accept may take.
///
/// Inside a cluster a handshake takes milliseconds; ten seconds covers a loaded node while
/// bounding how long a silent peer holds a socket and a task.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP/2 settings of an HBONE server connection.
fn server_builder() -> h2::server::Builder {
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS));
    builder
}

/// The HTTP/2 settings of an HBONE client connection.
fn client_builder() -> h2::client::Builder {
    let mut builder = h2::client::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .enable_push(false);
    builder
}
