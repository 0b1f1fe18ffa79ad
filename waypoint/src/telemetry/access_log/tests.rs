//! The access log's writer: lines read exactly as when the request's thread wrote them
//! (text and JSON), every queued line is out once the log closes, and a full queue drops and
//! counts lines instead of blocking.

use std::sync::mpsc as std_mpsc;

use prometheus_client::registry::Registry;
use tokio::time::Instant;

use super::*;
use crate::telemetry::{RequestMetrics, RequestRecord};
use crate::testing::*;

/// The two lines of [`drop_records`], as the request path wrote them before the writer
/// existed (captured from that code), timestamps left out.
const TEXT: [&str; 2] = [
    r#" INFO access: request method=GET src.addr=127.0.0.9 src.identity=spiffe://cluster.local/ns/shop/sa/frontend dst.service=front.shop.svc.cluster.local dst.workload="front-0" path=/chat?x=1 authority=front.shop.svc.cluster.local protocol="HTTP/1.1" status=101 flags=SI route="shop/chat" rule="rule-0" attempts=1 duration_ms=0 bytes_received=4 bytes_sent=10 trace_id=0af7651916cd43dd8448eb211c80319c error="closed \"idle\"" caused_by="proxy""#,
    r#" INFO access: request method=GET src.addr= src.identity=spiffe://cluster.local/ns/shop/sa/frontend dst.service=front.shop.svc.cluster.local path= authority= protocol="HTTP/2" status=200 flags=- attempts=0 duration_ms=0 bytes_received=0 bytes_sent=0 trace_id="#,
];

/// The same with `--log-json`.
const JSON: [&str; 2] = [
    r#"{"level":"INFO","fields":{"message":"request","method":"GET","src.addr":"127.0.0.9","src.identity":"spiffe://cluster.local/ns/shop/sa/frontend","dst.service":"front.shop.svc.cluster.local","dst.workload":"front-0","path":"/chat?x=1","authority":"front.shop.svc.cluster.local","protocol":"HTTP/1.1","status":101,"flags":"SI","route":"shop/chat","rule":"rule-0","attempts":1,"duration_ms":0,"bytes_received":4,"bytes_sent":10,"trace_id":"0af7651916cd43dd8448eb211c80319c","error":"closed \"idle\"","caused_by":"proxy"},"target":"access"}"#,
    r#"{"level":"INFO","fields":{"message":"request","method":"GET","src.addr":"","src.identity":"spiffe://cluster.local/ns/shop/sa/frontend","dst.service":"front.shop.svc.cluster.local","path":"","authority":"","protocol":"HTTP/2","status":200,"flags":"-","attempts":0,"duration_ms":0,"bytes_received":0,"bytes_sent":0,"trace_id":""},"target":"access"}"#,
];

/// Bytes written, shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// The lines written, each without its timestamp (which must be there).
    fn lines(&self) -> Vec<String> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| {
                if let Some(start) = line.find(r#""timestamp":""#) {
                    let end = start + line[start..].find(r#"Z","#).expect("a UTC timestamp") + 3;
                    format!("{}{}", &line[..start], &line[end..])
                } else {
                    let (timestamp, rest) = line.split_once(' ').unwrap();
                    assert!(timestamp.ends_with('Z'), "{line}");
                    rest.to_string()
                }
            })
            .collect()
    }
}

/// Drops two records into `metrics`: an upgraded request with every field of the line set,
/// and a bare one; under a dispatcher that lets `access` lines through.
fn drop_records(metrics: &RequestMetrics, dispatch: &Dispatch) {
    let mut world = World::new();
    world.service("front", [10, 96, 0, 1], &[80], true);
    world.workload(
        "front-0",
        "front",
        80,
        "127.0.0.9:8080".parse().unwrap(),
        true,
    );
    let snapshot = world.discovery.subscribe().borrow().clone();
    let service = snapshot.service_by_hostname(NS, &host("front")).unwrap();
    let workload = snapshot.workload_by_ip("127.0.0.9".parse().unwrap());
    let start = || {
        RequestRecord::start(
            metrics.clone(),
            Instant::now(),
            client_identity(),
            service.clone(),
        )
    };
    tracing::dispatcher::with_default(dispatch, || {
        let mut record = start();
        record.source = workload.clone();
        record.endpoint = workload.clone();
        record.path = "/chat?x=1".into();
        record.authority = "front.shop.svc.cluster.local".into();
        record.version = "HTTP/1.1";
        record.status = 101;
        record.flags = "SI".into();
        record.route = Some(("shop/chat".into(), "rule-0".into()));
        record.attempts = 1;
        record.trace_id = "0af7651916cd43dd8448eb211c80319c".into();
        record.error = Some(("closed \"idle\"".into(), "proxy"));
        record.add_upgraded_bytes(4, 10);
        drop(record);
        let mut record = start();
        record.status = 200;
        record.flags = "-".into();
        record.protocol = "grpc";
        record.version = "HTTP/2";
        drop(record);
    });
}

fn settings(json: bool) -> AccessLogSettings {
    AccessLogSettings {
        queue: 16,
        json,
        ansi: false,
    }
}

#[test]
fn queued_lines_read_exactly_as_those_the_request_path_wrote() {
    for (json, expected) in [(false, TEXT), (true, JSON)] {
        // Without a writer, the request's thread formats the line, as it always did.
        let inline = Captured::default();
        let formatter = formatter(&settings(json), &Batch::default());
        let at_once = {
            let inline = inline.clone();
            let layer = tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || inline.clone());
            if json {
                Dispatch::new(tracing_subscriber::registry().with(layer.json()))
            } else {
                Dispatch::new(tracing_subscriber::registry().with(layer))
            }
        };
        drop_records(&RequestMetrics::new(&mut Registry::default()), &at_once);
        assert_eq!(inline.lines(), expected, "json: {json}");

        // With one, the request only queues it; the writer formats and writes.
        let written = Captured::default();
        let mut registry = Registry::default();
        let (log, writer) =
            AccessLog::start(&settings(json), Box::new(written.clone()), &mut registry).unwrap();
        let metrics = RequestMetrics::new(&mut registry).with_access_log(log.clone());
        drop_records(&metrics, &formatter);
        assert_eq!(log.dropped(), 0);
        drop((metrics, log));
        assert!(writer.finish(Duration::from_secs(5)), "the writer ends");
        assert_eq!(written.lines(), expected, "json: {json}");
    }
}

/// A line with `path` `/<n>`.
fn entry(n: usize) -> AccessEntry {
    AccessEntry {
        method: Method::GET,
        source_addr: None,
        source_principal: client_identity(),
        service: Arc::from("front.shop.svc.cluster.local"),
        endpoint: None,
        path: format!("/{n}"),
        authority: String::new(),
        version: "HTTP/1.1",
        status: 200,
        grpc_status: None,
        flags: "-".into(),
        route: None,
        attempts: 1,
        duration_ms: 0,
        bytes_received: 0,
        bytes_sent: 0,
        trace_id: String::new(),
        error: None,
    }
}

/// A sink whose first write waits until the test releases it.
struct Stuck {
    entered: Option<std_mpsc::Sender<()>>,
    release: std_mpsc::Receiver<()>,
    out: Captured,
}

impl Write for Stuck {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Some(entered) = self.entered.take() {
            entered.send(()).unwrap();
            self.release.recv().unwrap();
        }
        self.out.write(bytes)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_full_queue_drops_lines_and_counts_them_instead_of_waiting() {
    let (entered_tx, entered) = std_mpsc::channel();
    let (release, release_rx) = std_mpsc::channel();
    let out = Captured::default();
    let sink = Stuck {
        entered: Some(entered_tx),
        release: release_rx,
        out: out.clone(),
    };
    let mut registry = Registry::default();
    let settings = AccessLogSettings {
        queue: 2,
        ..settings(false)
    };
    let (log, writer) = AccessLog::start(&settings, Box::new(sink), &mut registry).unwrap();

    log.send(entry(0));
    entered.recv().unwrap();
    // The writer is stuck writing line 0: two lines fit in the queue, three do not.
    for n in 1..=5 {
        log.send(entry(n));
    }
    assert_eq!(log.dropped(), 3);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("waypoint_access_log_dropped_lines_total 3"),
        "{text}"
    );

    release.send(()).unwrap();
    drop(log);
    assert!(writer.finish(Duration::from_secs(5)), "the writer ends");
    let paths: Vec<String> = out
        .lines()
        .iter()
        .map(|line| {
            line.split(" path=")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(paths, ["/0", "/1", "/2"]);
}
