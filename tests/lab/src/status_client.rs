//! The controller's status API, reached over its Unix socket: the controller listens inside its
//! own namespace, and the socket file is how tools in the host's namespace get to it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

/// How long one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request to the controller failed.
#[derive(Debug, thiserror::Error)]
pub enum StatusClientError {
    /// The socket does not answer.
    #[error(
        "cannot connect to the controller's status socket {path}: {source}; is the controller running? (`status` shows it)"
    )]
    Connect {
        /// The socket.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("GET {uri} on the controller's status socket failed: {source}")]
    Http {
        /// The request path.
        uri: String,
        /// What went wrong.
        source: hyper::Error,
    },
    /// No answer in time.
    #[error("GET {uri} on the controller's status socket got no answer within {REQUEST_TIMEOUT:?}")]
    Timeout {
        /// The request path.
        uri: String,
    },
    /// The controller answered with an error status.
    #[error("GET {uri}: the controller answered {status}: {body}")]
    Status {
        /// The request path.
        uri: String,
        /// The status code.
        status: http::StatusCode,
        /// The body.
        body: String,
    },
    /// The body is not the JSON expected.
    #[error("GET {uri}: unexpected answer from the controller: {source}")]
    Decode {
        /// The request path.
        uri: String,
        /// The parser's complaint.
        source: serde_json::Error,
    },
}

/// A client of one controller's status socket.
#[derive(Clone, Debug)]
pub struct StatusClient {
    socket: PathBuf,
}

impl StatusClient {
    /// A client of the socket at `socket`.
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_path_buf(),
        }
    }

    /// Whether the controller is ready (`GET /ready` answers 200).
    pub async fn ready(&self) -> Result<(), StatusClientError> {
        self.get("/ready").await.map(drop)
    }

    /// `GET uri`, decoded from JSON.
    pub async fn get_json<T: DeserializeOwned>(&self, uri: &str) -> Result<T, StatusClientError> {
        let body = self.get(uri).await?;
        serde_json::from_slice(&body).map_err(|source| StatusClientError::Decode {
            uri: uri.to_string(),
            source,
        })
    }

    /// `GET uri`; the body of a 2xx answer.
    pub async fn get(&self, uri: &str) -> Result<Bytes, StatusClientError> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(uri))
            .await
            .map_err(|_| StatusClientError::Timeout {
                uri: uri.to_string(),
            })?
    }

    async fn exchange(&self, uri: &str) -> Result<Bytes, StatusClientError> {
        let http_error = |source| StatusClientError::Http {
            uri: uri.to_string(),
            source,
        };
        let stream = UnixStream::connect(&self.socket).await.map_err(|source| {
            StatusClientError::Connect {
                path: self.socket.clone(),
                source,
            }
        })?;
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http_error)?;
        // The connection ends when this request is done; its errors surface on the request.
        tokio::spawn(connection);
        let request = http::Request::get(uri)
            .header(http::header::HOST, "controller")
            .body(Empty::<Bytes>::new())
            .expect("a GET with a path is a valid request");
        let response = sender.send_request(request).await.map_err(http_error)?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(http_error)?
            .to_bytes();
        if !status.is_success() {
            return Err(StatusClientError::Status {
                uri: uri.to_string(),
                status,
                body: String::from_utf8_lossy(&body).trim().to_string(),
            });
        }
        Ok(body)
    }
}
