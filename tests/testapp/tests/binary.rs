//! The `testapp` binary end to end: `serve` announces itself, `get` and `echo` print their JSON
//! and exit codes, SIGTERM ends `serve` cleanly.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_testapp");

/// Kills the server if a test fails before stopping it.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(extra: &[&str]) -> (Served, Value) {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--bind",
            "127.0.0.1",
            "--http",
            "0",
            "--tcp-echo",
            "0",
        ])
        .args(extra)
        .env("POD_NAME", "web-0")
        .env("POD_NAMESPACE", "demo")
        .env("APP_VERSION", "v9")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start testapp serve");
    let stdout = child.stdout.take().unwrap();
    let served = Served(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the ready line");
    (
        served,
        serde_json::from_str(&line).expect("ready line is JSON"),
    )
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run testapp")
}

fn json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn wait_bounded(child: &mut Child, bound: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < bound,
            "process did not exit within {bound:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serve_get_echo_and_sigterm() {
    let (mut served, ready) = serve(&["--version", "v3"]);
    assert_eq!(ready["ready"], true);
    let http = ready["http"].as_str().unwrap().to_owned();
    let echo = ready["tcp_echo"].as_str().unwrap().to_owned();

    let url = format!("http://{http}/");
    let output = run(&[
        "get",
        &url,
        "--count",
        "3",
        "--h2",
        "--header",
        "x-user:tester",
        "--timeout-ms",
        "5000",
    ]);
    assert!(output.status.success(), "{output:?}");
    let lines = json_lines(&output);
    assert_eq!(lines.len(), 4, "three request lines and the summary");
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[0]["pod"], "web-0");
    assert_eq!(
        lines[0]["version"], "v3",
        "--version wins over $APP_VERSION"
    );
    assert!(lines[0]["error"].is_null() && lines[0]["latency_ms"].is_number());
    let summary = &lines[3];
    assert_eq!(
        (summary["requests"].as_u64(), summary["ok"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(summary["status"]["200"], 3);
    assert_eq!(summary["errors"], 0);
    assert_eq!(summary["by_pod"]["web-0"], 3);
    assert_eq!(summary["by_version"]["v3"], 3);
    assert!(summary["p50_ms"].is_number() && summary["p99_ms"].is_number());

    let quiet = run(&[
        "get",
        &format!("http://{http}/?status=503"),
        "--count",
        "20",
        "--concurrency",
        "4",
    ]);
    assert!(quiet.status.success(), "any answered status exits 0");
    let lines = json_lines(&quiet);
    assert_eq!(lines.len(), 1, "only the summary above ten requests");
    assert_eq!(lines[0]["status"]["503"], 20);

    let output = run(&["echo", &echo, "--message", "ping", "--hold-ms", "250"]);
    assert!(output.status.success(), "{output:?}");
    let report = &json_lines(&output)[0];
    assert_eq!(report["ok"], true);
    assert!(report["rounds"].as_u64().unwrap() >= 2, "{report}");
    assert!(report["error"].is_null());

    let pid = served.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = wait_bounded(&mut served.0, Duration::from_secs(10));
    assert!(status.success(), "serve exits 0 on SIGTERM: {status:?}");
}

#[test]
fn clients_fail_with_non_zero_status() {
    let refused = run(&["get", "http://8.8.8.8:80/"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(refused.stdout.is_empty());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("only talks to the lab"));

    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let failed = run(&["get", &format!("http://127.0.0.1:{port}/"), "--count", "2"]);
    assert_eq!(failed.status.code(), Some(1));
    let summary = json_lines(&failed).pop().unwrap();
    assert_eq!(summary["errors"], 2);

    let echo = run(&["echo", &format!("127.0.0.1:{port}"), "--message", "x"]);
    assert_eq!(echo.status.code(), Some(1));
    assert_eq!(json_lines(&echo)[0]["ok"], false);

    let bad = run(&["serve", "--fail-rate", "2", "--delay-ms", "999999"]);
    assert_eq!(bad.status.code(), Some(2));
    let message = String::from_utf8_lossy(&bad.stderr);
    assert!(
        message.contains("--fail-rate 2") && message.contains("--delay-ms 999999"),
        "{message}"
    );
}
