//! The enrollment protocol, server and client; no root needed (the test process's own
//! namespace, `/proc/self/ns/net`, stands in for a pod's).

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

use super::protocol::{Reply, Request};
use super::*;

const OWN_NETNS: &str = "/proc/self/ns/net";
const WAIT: Duration = Duration::from_secs(5);

#[test]
fn requests_have_the_documented_wire_form() {
    let add = Request::Add {
        uid: "Kubernetes//Pod/ns/name".into(),
        netns: "/var/run/netns/x".into(),
    };
    assert_eq!(
        add.to_line(),
        "{\"op\":\"add\",\"uid\":\"Kubernetes//Pod/ns/name\",\"netns\":\"/var/run/netns/x\"}\n"
    );
    let remove = Request::Remove { uid: "u".into() };
    assert_eq!(remove.to_line(), "{\"op\":\"remove\",\"uid\":\"u\"}\n");
    let snapshot = Request::Snapshot {
        pods: vec![PodEntry {
            uid: "u".into(),
            netns: "/proc/1/ns/net".into(),
        }],
    };
    assert_eq!(
        snapshot.to_line(),
        "{\"op\":\"snapshot\",\"pods\":[{\"uid\":\"u\",\"netns\":\"/proc/1/ns/net\"}]}\n"
    );
}

#[test]
fn parse_accepts_unknown_fields_and_rejects_bad_requests_clearly() {
    let parsed = Request::parse(br#"{"op":"remove","uid":"u","since":"v2"}"#).unwrap();
    assert_eq!(parsed, Request::Remove { uid: "u".into() });
    for (line, expected) in [
        (&b"not json"[..], "expected ident"),
        (br#"{"op":"launch","uid":"u"}"#, "unknown variant `launch`"),
        (br#"{"op":"add","uid":"u"}"#, "missing field `netns`"),
        (br#"{"uid":"u"}"#, "missing field `op`"),
    ] {
        let message = Request::parse(line).unwrap_err().to_string();
        assert!(message.contains(expected), "{message}");
        assert!(message.contains("\"op\" one of"), "{message}");
    }
}

#[test]
fn replies_have_the_documented_wire_form() {
    assert_eq!(Reply::from_outcome(&Ok(())).to_line(), "{\"ok\":true}\n");
    let failed = Reply::from_outcome(&Err(EnrollmentError::ProxyGone)).to_line();
    assert!(
        failed.starts_with("{\"ok\":false,\"error\":\"ztunnel is shutting down"),
        "{failed}"
    );
}

#[test]
fn uids_must_be_non_empty_without_whitespace() {
    assert_eq!(
        PodUid::parse("Kubernetes//Pod/a/b").unwrap().as_str(),
        "Kubernetes//Pod/a/b"
    );
    for bad in ["", "a b", "a\nb", "\t"] {
        assert!(
            matches!(PodUid::parse(bad), Err(EnrollmentError::InvalidUid { .. })),
            "{bad:?}"
        );
    }
}

/// A running server with a temporary socket and the receiving end of its events.
struct Harness {
    _dir: tempfile::TempDir,
    path: PathBuf,
    events: mpsc::Receiver<EnrollmentEvent>,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl Harness {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/ztunnel.sock");
        let (sender, events) = mpsc::channel(8);
        let server = EnrollmentServer::bind(&path, sender).unwrap();
        let (stop, stopped) = oneshot::channel();
        let server = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        Self {
            _dir: dir,
            path,
            events,
            stop: Some(stop),
            server,
        }
    }

    async fn next_event(&mut self) -> EnrollmentEvent {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("no enrollment event within 5s")
            .expect("server dropped the event channel")
    }

    /// Answers the next event with `outcome` and returns a description of it.
    async fn answer_next(&mut self, outcome: Result<(), &str>) -> String {
        match self.next_event().await {
            EnrollmentEvent::Add { uid, netns, reply } => {
                reply.send(outcome);
                format!("add {uid} {}", netns.path().display())
            }
            EnrollmentEvent::Remove { uid, reply } => {
                reply.send(outcome);
                format!("remove {uid}")
            }
            EnrollmentEvent::Snapshot { pods, reply } => {
                reply.send(outcome);
                let uids: Vec<_> = pods.iter().map(|(uid, _)| uid.to_string()).collect();
                format!("snapshot {}", uids.join(","))
            }
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, &mut self.server)
            .await
            .expect("server did not stop within 5s")
            .unwrap();
        assert!(
            !self.path.exists(),
            "the socket file is removed on shutdown"
        );
    }
}

/// Sends raw lines and reads one reply line per expected reply.
async fn raw_exchange(path: &PathBuf, input: &[u8], replies: usize) -> Vec<String> {
    let stream = UnixStream::connect(path).await.unwrap();
    let (read, mut write) = stream.into_split();
    write.write_all(input).await.unwrap();
    let mut lines = BufReader::new(read).lines();
    let mut out = Vec::new();
    for _ in 0..replies {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("reply within 5s");
        out.push(line.unwrap().expect("a reply line"));
    }
    out
}

#[tokio::test]
async fn add_remove_and_snapshot_reach_the_proxy_and_its_answers_come_back() {
    let mut harness = Harness::start();
    let path = harness.path.clone();
    let agent = tokio::spawn(async move {
        let mut client = EnrollmentClient::connect(&path).await.unwrap();
        client.add("Kubernetes//Pod/ns/a", OWN_NETNS).await.unwrap();
        let refused = client.remove("Kubernetes//Pod/ns/a").await.unwrap_err();
        let pods = [
            PodEntry {
                uid: "Kubernetes//Pod/ns/b".into(),
                netns: OWN_NETNS.into(),
            },
            PodEntry {
                uid: "Kubernetes//Pod/ns/c".into(),
                netns: OWN_NETNS.into(),
            },
        ];
        client.snapshot(&pods).await.unwrap();
        refused
    });
    assert_eq!(
        harness.answer_next(Ok(())).await,
        format!("add Kubernetes//Pod/ns/a {OWN_NETNS}")
    );
    assert_eq!(
        harness.answer_next(Err("rules failed: no iptables")).await,
        "remove Kubernetes//Pod/ns/a"
    );
    assert_eq!(
        harness.answer_next(Ok(())).await,
        "snapshot Kubernetes//Pod/ns/b,Kubernetes//Pod/ns/c"
    );
    let refused = tokio::time::timeout(WAIT, agent).await.unwrap().unwrap();
    assert_eq!(
        refused.to_string(),
        "ztunnel refused remove: rules failed: no iptables"
    );
    harness.stop().await;
}

#[tokio::test]
async fn malformed_lines_get_an_error_and_the_connection_keeps_serving() {
    let mut harness = Harness::start();
    let input = b"{oops\n\n{\"op\":\"dance\"}\n{\"op\":\"remove\",\"uid\":\"a b\"}\n{\"op\":\"remove\",\"uid\":\"u\"}\n";
    let path = harness.path.clone();
    let agent = tokio::spawn(async move { raw_exchange(&path, input, 4).await });
    assert_eq!(harness.answer_next(Ok(())).await, "remove u");
    let replies = tokio::time::timeout(WAIT, agent).await.unwrap().unwrap();
    assert!(
        replies[0].contains("\"ok\":false") && replies[0].contains("malformed request"),
        "{}",
        replies[0]
    );
    assert!(
        replies[1].contains("unknown variant `dance`"),
        "{}",
        replies[1]
    );
    assert!(replies[2].contains("invalid pod uid"), "{}", replies[2]);
    assert_eq!(replies[3], "{\"ok\":true}");
    harness.stop().await;
}

#[tokio::test]
async fn an_unopenable_namespace_is_refused_without_bothering_the_proxy() {
    let harness = Harness::start();
    let mut client = EnrollmentClient::connect(&harness.path).await.unwrap();
    let error = client
        .add("u", "/var/run/netns/does-not-exist-zt")
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("cannot open the network namespace /var/run/netns/does-not-exist-zt"),
        "{message}"
    );
    let error = client
        .add("u", "/proc/self/status")
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("is not a namespace file"), "{error}");
    harness.stop().await;
}

#[tokio::test]
async fn a_snapshot_leaves_out_pods_whose_namespace_is_gone_and_says_so() {
    let mut harness = Harness::start();
    let path = harness.path.clone();
    let agent = tokio::spawn(async move {
        let mut client = EnrollmentClient::connect(&path).await.unwrap();
        let pods = [
            PodEntry {
                uid: "live".into(),
                netns: OWN_NETNS.into(),
            },
            PodEntry {
                uid: "gone".into(),
                netns: "/proc/0/ns/net".into(),
            },
        ];
        client.snapshot(&pods).await
    });
    assert_eq!(harness.answer_next(Ok(())).await, "snapshot live");
    let message = tokio::time::timeout(WAIT, agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("snapshot applied without 1 pod(s)") && message.contains("pod gone:"),
        "{message}"
    );
    harness.stop().await;
}

#[tokio::test]
async fn a_snapshot_with_a_duplicate_uid_is_refused() {
    let harness = Harness::start();
    let mut client = EnrollmentClient::connect(&harness.path).await.unwrap();
    let pod = PodEntry {
        uid: "u".into(),
        netns: OWN_NETNS.into(),
    };
    let message = client
        .snapshot(&[pod.clone(), pod])
        .await
        .unwrap_err()
        .to_string();
    assert!(message.contains("lists pod u more than once"), "{message}");
    harness.stop().await;
}

#[tokio::test]
async fn an_unanswered_or_unserved_request_gets_an_error() {
    let mut harness = Harness::start();
    let path = harness.path.clone();
    let agent = tokio::spawn(async move {
        let mut client = EnrollmentClient::connect(&path).await.unwrap();
        client.remove("u").await.unwrap_err().to_string()
    });
    drop(harness.next_event().await);
    let message = tokio::time::timeout(WAIT, agent).await.unwrap().unwrap();
    assert!(
        message.contains("dropped the request without answering"),
        "{message}"
    );

    harness.events.close();
    let mut client = EnrollmentClient::connect(&harness.path).await.unwrap();
    let message = client.remove("u").await.unwrap_err().to_string();
    assert!(message.contains("ztunnel is shutting down"), "{message}");
    harness.stop().await;
}

#[tokio::test]
async fn an_oversized_line_is_refused_and_the_server_keeps_serving() {
    let mut harness = Harness::start();
    let mut huge = vec![b'x'; MAX_LINE_BYTES + 10];
    huge.push(b'\n');
    let replies = raw_exchange(&harness.path, &huge, 1).await;
    assert!(replies[0].contains("longer than"), "{}", replies[0]);

    let path = harness.path.clone();
    let agent = tokio::spawn(async move {
        EnrollmentClient::connect(&path)
            .await
            .unwrap()
            .remove("u")
            .await
    });
    assert_eq!(harness.answer_next(Ok(())).await, "remove u");
    tokio::time::timeout(WAIT, agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    harness.stop().await;
}

#[tokio::test]
async fn bind_replaces_a_stale_socket_and_refuses_a_live_one_or_a_file() {
    let harness = Harness::start();
    let (sender, _events) = mpsc::channel(1);
    let live = EnrollmentServer::bind(&harness.path, sender.clone()).unwrap_err();
    assert!(
        matches!(live, EnrollmentError::AlreadyServed { .. }),
        "{live}"
    );

    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    EnrollmentServer::bind(&stale, sender.clone()).expect("a stale socket is replaced");

    let file = dir.path().join("file");
    std::fs::write(&file, "not a socket").unwrap();
    let error = EnrollmentServer::bind(&file, sender).unwrap_err();
    assert!(
        error.to_string().contains("is not a Unix socket"),
        "{error}"
    );
    harness.stop().await;
}

#[tokio::test]
async fn connecting_to_a_missing_socket_says_whether_ztunnel_runs() {
    let error = EnrollmentClient::connect("/nonexistent/zt.sock")
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("is ztunnel running on this node?"),
        "{error}"
    );
}
