//! The node agent's side of the enrollment socket.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::protocol::{PodEntry, Reply, Request};
use super::{CLIENT_REPLY_TIMEOUT, EnrollmentError};

/// A connection to a ztunnel's enrollment socket; one request at a time.
///
/// After (re)connecting, an agent should send [`EnrollmentClient::snapshot`] first. After
/// any error other than [`EnrollmentError::Rejected`] the connection may be out of step with
/// the server: drop the client, reconnect and send a snapshot.
#[derive(Debug)]
pub struct EnrollmentClient {
    path: PathBuf,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl EnrollmentClient {
    /// Connects to the socket at `path`.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self, EnrollmentError> {
        let path = path.as_ref().to_path_buf();
        let stream =
            UnixStream::connect(&path)
                .await
                .map_err(|source| EnrollmentError::Connect {
                    path: path.clone(),
                    source,
                })?;
        let (read, writer) = stream.into_split();
        Ok(Self {
            path,
            reader: BufReader::new(read),
            writer,
        })
    }

    /// Enrolls the pod `uid` whose network namespace is at `netns`.
    pub async fn add(&mut self, uid: &str, netns: impl AsRef<Path>) -> Result<(), EnrollmentError> {
        self.request(Request::Add {
            uid: uid.to_string(),
            netns: path_text(netns.as_ref()),
        })
        .await
    }

    /// Unenrolls the pod `uid`.
    pub async fn remove(&mut self, uid: &str) -> Result<(), EnrollmentError> {
        self.request(Request::Remove {
            uid: uid.to_string(),
        })
        .await
    }

    /// Sends the complete list of pods that should be enrolled; ztunnel drops the others.
    pub async fn snapshot(&mut self, pods: &[PodEntry]) -> Result<(), EnrollmentError> {
        self.request(Request::Snapshot {
            pods: pods.to_vec(),
        })
        .await
    }

    /// Sends one request and waits for its reply.
    async fn request(&mut self, request: Request) -> Result<(), EnrollmentError> {
        let io_error = |source| EnrollmentError::Io {
            path: self.path.clone(),
            source,
        };
        self.writer
            .write_all(request.to_line().as_bytes())
            .await
            .map_err(io_error)?;
        let mut line = String::new();
        let read = tokio::time::timeout(CLIENT_REPLY_TIMEOUT, self.reader.read_line(&mut line))
            .await
            .map_err(|_| EnrollmentError::ReplyTimeout {
                path: self.path.clone(),
            })?
            .map_err(io_error)?;
        if read == 0 {
            return Err(EnrollmentError::Closed {
                path: self.path.clone(),
            });
        }
        let reply: Reply =
            serde_json::from_str(&line).map_err(|source| EnrollmentError::BadReply {
                line: line.trim_end().to_string(),
                source,
            })?;
        if reply.ok {
            Ok(())
        } else {
            Err(EnrollmentError::Rejected {
                op: request.op(),
                message: reply.error.unwrap_or_default(),
            })
        }
    }
}

/// The path as the protocol's text; a non-UTF-8 path is sent lossily and ztunnel's reply
/// names the path it could not open.
fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
