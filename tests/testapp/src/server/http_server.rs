//! The HTTP listener: HTTP/1.1 (with Upgrade) and HTTP/2 prior knowledge on one port, a task
//! per connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use super::{ACCEPT_ERROR_PAUSE, DRAIN_DEADLINE, Responder, upgrade_echo};
use crate::shutdown::DrainWatch;

/// Accepts connections until shutdown; each connection holds its own drain watch.
pub(super) async fn accept_loop(
    listener: TcpListener,
    responder: Arc<Responder>,
    mut drain: DrainWatch,
) {
    let ids = AtomicU64::new(0);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = drain.signaled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let id = ids.fetch_add(1, Ordering::Relaxed);
                let span = tracing::debug_span!("http", id, src.addr = %peer);
                let task = serve_connection(stream, peer, responder.clone(), drain.clone());
                tokio::spawn(task.instrument(span));
            }
            Err(error) => {
                tracing::warn!(%error, "accepting an HTTP connection failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

/// Serves one connection; on shutdown it lets requests in flight finish, then closes, and is
/// closed by force if that takes longer than [`DRAIN_DEADLINE`].
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    responder: Arc<Responder>,
    mut drain: DrainWatch,
) {
    // Latency tests measure the app, not Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    let upgrade_drain = drain.clone();
    let service = service_fn(move |request| {
        let responder = responder.clone();
        let drain = upgrade_drain.clone();
        async move {
            let response = match upgrade_echo::requested(&request) {
                Some(protocol) => upgrade_echo::accept(request, protocol, &responder, drain),
                None => responder.respond(request, peer).await,
            };
            Ok::<_, Infallible>(response)
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = drain.signaled() => {
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(DRAIN_DEADLINE, connection).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::debug!("closed by force at the drain deadline");
                    return;
                }
            }
        }
    };
    if let Err(error) = result {
        // Clients that vanish mid-request are routine in fault tests.
        tracing::debug!(%error, "connection ended with an error");
    }
}
