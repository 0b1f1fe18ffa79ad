//! ztunnel's side of the enrollment socket.

use std::collections::HashSet;
use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::protocol::{Reply, Request};
use super::{
    EnrollmentError, EnrollmentEvent, MAX_LINE_BYTES, PROXY_REPLY_TIMEOUT, PodUid, Responder,
};
use crate::inpod::netns::Netns;

/// How long to pause accepting after an accept error (typically out of file descriptors), so
/// that a persistent error does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Listens on the enrollment socket and turns requests into [`EnrollmentEvent`]s.
#[derive(Debug)]
pub struct EnrollmentServer {
    listener: UnixListener,
    path: PathBuf,
    events: mpsc::Sender<EnrollmentEvent>,
}

impl EnrollmentServer {
    /// Listens on `path` (creating its directory), readable and writable by the owner only.
    ///
    /// A socket left behind by an earlier ztunnel is replaced; a socket that another process
    /// still serves, or a path that is not a socket, is an error. Call from a tokio runtime.
    pub fn bind(
        path: impl AsRef<Path>,
        events: mpsc::Sender<EnrollmentEvent>,
    ) -> Result<Self, EnrollmentError> {
        let path = path.as_ref().to_path_buf();
        let bind_error = |source| EnrollmentError::Bind {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(bind_error)?;
        }
        remove_stale_socket(&path)?;
        let listener = UnixListener::bind(&path).map_err(bind_error)?;
        // Only the node agent (root) may enroll pods.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(bind_error)?;
        Ok(Self {
            listener,
            path,
            events,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves agents until `shutdown` completes, then closes every connection and removes
    /// the socket file.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        connections.spawn(serve_connection(stream, self.events.clone()));
                    }
                    Err(error) => {
                        tracing::warn!(%error, path = %self.path.display(), "cannot accept an enrollment connection");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        connections.shutdown().await;
        if let Err(error) = std::fs::remove_file(&self.path) {
            tracing::warn!(%error, path = %self.path.display(), "cannot remove the enrollment socket");
        }
    }
}

/// Removes a socket nobody serves any more; refuses anything else.
fn remove_stale_socket(path: &Path) -> Result<(), EnrollmentError> {
    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !metadata.file_type().is_socket() {
        return Err(EnrollmentError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(EnrollmentError::AlreadyServed {
            path: path.to_path_buf(),
        });
    }
    std::fs::remove_file(path).map_err(|source| EnrollmentError::Bind {
        path: path.to_path_buf(),
        source,
    })
}

/// Answers one agent's requests, in order, until it hangs up.
async fn serve_connection(stream: UnixStream, events: mpsc::Sender<EnrollmentEvent>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let limit = MAX_LINE_BYTES as u64 + 1;
        match (&mut reader).take(limit).read_until(b'\n', &mut line).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(%error, "enrollment connection failed");
                return;
            }
        }
        // `take` stopped short of the newline: the line is longer than allowed.
        let too_long = line.len() > MAX_LINE_BYTES && !line.ends_with(b"\n");
        if !too_long && line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let outcome = if too_long {
            Err(EnrollmentError::LineTooLong)
        } else {
            handle_line(&line, &events).await
        };
        if let Err(error) = &outcome {
            tracing::warn!(%error, "enrollment request failed");
        }
        let reply = Reply::from_outcome(&outcome).to_line();
        if write.write_all(reply.as_bytes()).await.is_err() || too_long {
            return;
        }
    }
}

/// Parses one request, hands it to the proxy and waits for the outcome.
async fn handle_line(
    line: &[u8],
    events: &mpsc::Sender<EnrollmentEvent>,
) -> Result<(), EnrollmentError> {
    let request = Request::parse(line)?;
    let op = request.op();
    let (reply, answer) = Responder::pair();
    let mut left_out = Vec::new();
    let event = match request {
        Request::Add { uid, netns } => {
            let uid = PodUid::parse(&uid)?;
            let netns = open_netns(&uid, &netns)?;
            tracing::info!(%uid, netns = %netns.path().display(), "enrollment: add");
            EnrollmentEvent::Add { uid, netns, reply }
        }
        Request::Remove { uid } => {
            let uid = PodUid::parse(&uid)?;
            tracing::info!(%uid, "enrollment: remove");
            EnrollmentEvent::Remove { uid, reply }
        }
        Request::Snapshot { pods: entries } => {
            let mut seen = HashSet::new();
            let mut pods = Vec::with_capacity(entries.len());
            for entry in entries {
                let uid = PodUid::parse(&entry.uid)?;
                if !seen.insert(uid.clone()) {
                    return Err(EnrollmentError::DuplicateUid { uid });
                }
                match open_netns(&uid, &entry.netns) {
                    Ok(netns) => pods.push((uid, netns)),
                    Err(error) => left_out.push(error),
                }
            }
            tracing::info!(
                pods = pods.len(),
                left_out = left_out.len(),
                "enrollment: snapshot"
            );
            EnrollmentEvent::Snapshot { pods, reply }
        }
    };
    events
        .send(event)
        .await
        .map_err(|_| EnrollmentError::ProxyGone)?;
    tokio::time::timeout(PROXY_REPLY_TIMEOUT, answer)
        .await
        .map_err(|_| EnrollmentError::ProxyTimeout)?
        .map_err(|_| EnrollmentError::Unanswered)?
        .map_err(|message| EnrollmentError::Proxy { message })?;
    if !left_out.is_empty() {
        return Err(EnrollmentError::SnapshotIncomplete { failures: left_out });
    }
    tracing::debug!(op, "enrollment request applied");
    Ok(())
}

fn open_netns(uid: &PodUid, path: &str) -> Result<Netns, EnrollmentError> {
    Netns::open(path).map_err(|source| EnrollmentError::Netns {
        uid: uid.clone(),
        source,
    })
}
