//! The TCP echo: every byte a client sends comes back; nothing is sent first.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use super::ACCEPT_ERROR_PAUSE;
use crate::shutdown::DrainWatch;

/// Accepts echo connections until shutdown.
pub(super) async fn accept_loop(listener: TcpListener, mut drain: DrainWatch) {
    let ids = AtomicU64::new(0);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = drain.signaled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let id = ids.fetch_add(1, Ordering::Relaxed);
                let span = tracing::debug_span!("echo", id, src.addr = %peer);
                tokio::spawn(echo(stream, drain.clone()).instrument(span));
            }
            Err(error) => {
                tracing::warn!(%error, "accepting an echo connection failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

/// Echoes until the client half-closes (then half-closes back) or shutdown starts. Echo streams
/// are endless by design, so shutdown closes them at once instead of waiting.
async fn echo(mut stream: TcpStream, mut drain: DrainWatch) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.split();
    tokio::select! {
        copied = tokio::io::copy(&mut reader, &mut writer) => match copied {
            Ok(bytes) => {
                let _ = writer.shutdown().await;
                tracing::debug!(bytes, "echo stream ended");
            }
            Err(error) => tracing::debug!(%error, "echo stream failed"),
        },
        () = drain.signaled() => tracing::debug!("echo stream closed for shutdown"),
    }
}
