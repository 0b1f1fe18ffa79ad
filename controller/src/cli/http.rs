//! A minimal HTTP/1.1 GET against the controller's status API, on hyper's client connection,
//! over TCP (`host:port`) or a Unix socket (`unix:/path`, how the lab exposes a controller
//! that lives in another network namespace).

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

/// How long meshctl waits for the controller to accept and answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Fetches `path` from the status API at `addr` and returns the status and body, or an error
/// that says what to check.
pub fn get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let unreachable = |e: &dyn std::fmt::Display| {
        anyhow::anyhow!(
            "cannot reach the controller's status API at {addr}: {e}\n  is the controller (or a lab) running? Set --controller or MESH_CONTROLLER to its status address."
        )
    };
    runtime.block_on(async {
        let exchange = async {
            match addr.strip_prefix("unix:") {
                Some(socket) => {
                    request(tokio::net::UnixStream::connect(socket).await?, addr, path).await
                }
                None => request(tokio::net::TcpStream::connect(addr).await?, addr, path).await,
            }
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|e| unreachable(&e))?
            .map_err(|e| unreachable(&e))
    })
}

async fn request<S>(stream: S, addr: &str, path: &str) -> anyhow::Result<(u16, String)>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(connection);
    let host = if addr.starts_with("unix:") {
        "localhost"
    } else {
        addr
    };
    let request = http::Request::get(path)
        .header(http::header::HOST, host)
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Fetches JSON from the status API.
pub fn get_json(addr: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    let (status, body) = get(addr, path)?;
    if status != 200 {
        anyhow::bail!(
            "the controller answered {status} for {path}: {}",
            body.trim()
        );
    }
    Ok(serde_json::from_str(&body)?)
}
