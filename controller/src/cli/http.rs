//! A minimal HTTP/1.1 GET against the controller's status API, on hyper's client connection.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;

/// Fetches `path` from the status API at `addr` and returns the body, or an error that says
/// what to check.
pub fn get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let unreachable = |e: &dyn std::fmt::Display| {
            anyhow::anyhow!(
                "cannot reach the controller's status API at {addr}: {e}\n  is the controller (or a lab) running? Set --controller or MESH_CONTROLLER to its status address."
            )
        };
        let stream = tokio::time::timeout(std::time::Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|e| unreachable(&e))?
            .map_err(|e| unreachable(&e))?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| unreachable(&e))?;
        tokio::spawn(connection);
        let request = http::Request::get(path)
            .header(http::header::HOST, addr)
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await.map_err(|e| unreachable(&e))?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    })
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
