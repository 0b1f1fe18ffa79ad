//! HTTP/1.1 Upgrade (WebSocket-style) on the HTTP port: a request that asks to upgrade is
//! answered `101 Switching Protocols` to the protocol it named, and the upgraded connection
//! then echoes raw bytes like the TCP echo, so proxies' Upgrade paths can be tested end to end.
//! No WebSocket framing: the bytes after the 101 are the test's, not a real protocol's.

use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderValue, UPGRADE};
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use super::reply::{ReplyBody, Responder};
use crate::shutdown::DrainWatch;

/// The protocol an HTTP/1.1 request asks to upgrade to: `Connection` names `upgrade` and
/// `Upgrade` names a protocol other than `h2c` (HTTP/2 by prior knowledge is served on the
/// port already).
pub fn requested<B>(request: &Request<B>) -> Option<HeaderValue> {
    if request.version() != Version::HTTP_11 {
        return None;
    }
    let headers = request.headers();
    let asks = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    let protocol = headers.get(UPGRADE)?;
    let h2c = protocol
        .to_str()
        .is_ok_and(|p| p.trim().eq_ignore_ascii_case("h2c"));
    (asks && !h2c).then(|| protocol.clone())
}

/// Answers `101` to `protocol` and echoes the upgraded connection in a task of its own until
/// the client half-closes (then half-closes back) or shutdown starts.
pub(super) fn accept(
    mut request: Request<Incoming>,
    protocol: HeaderValue,
    responder: &Responder,
    mut drain: DrainWatch,
) -> Response<ReplyBody> {
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "the client did not complete the upgrade");
                return;
            }
        };
        let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
        tokio::select! {
            copied = tokio::io::copy(&mut reader, &mut writer) => match copied {
                Ok(bytes) => {
                    let _ = writer.shutdown().await;
                    tracing::debug!(bytes, "upgraded echo ended");
                }
                Err(error) => tracing::debug!(%error, "upgraded echo failed"),
            },
            () = drain.signaled() => tracing::debug!("upgraded echo closed for shutdown"),
        }
    });
    let mut response = Response::new(ReplyBody::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, protocol);
    responder.stamp(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().uri("/");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn only_real_upgrades_are_taken() {
        let ws = request(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert_eq!(requested(&ws).unwrap(), "websocket");
        assert!(requested(&request(&[("upgrade", "websocket")])).is_none());
        assert!(requested(&request(&[("connection", "upgrade")])).is_none());
        let h2c = request(&[("connection", "upgrade"), ("upgrade", "h2c")]);
        assert!(requested(&h2c).is_none());
    }
}
