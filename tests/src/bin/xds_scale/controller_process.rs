//! The controller under test, run as its own process so that its memory is its own: tokens
//! issued with `controller token issue`, then `controller serve` on loopback ports. Dropping
//! the handle kills the process, also when the benchmark fails.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Upper bound of one status API request.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// How often readiness and acknowledgements are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Memory of a process as the kernel accounts it, in KiB.
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    /// Resident set size now.
    pub rss_kib: u64,
    /// Peak resident set size since the process started.
    pub hwm_kib: u64,
}

/// A running `controller serve`.
pub struct ControllerProcess {
    child: Child,
    pub grpc_addr: SocketAddr,
    pub status_addr: SocketAddr,
    log: PathBuf,
}

/// Issues one ztunnel token per proxy, spread over the nodes, and returns the tokens.
/// Each token is also written to a file in `dir`, as a node would receive it.
pub fn issue_tokens(
    binary: &Path,
    state: &Path,
    dir: &Path,
    proxies: usize,
    nodes: usize,
) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    (0..proxies)
        .map(|i| {
            let out = dir.join(format!("proxy-{i}"));
            let node = format!("node-{}", i % nodes + 1);
            let status = Command::new(binary)
                .args(["token", "issue", "--node", &node, "--state"])
                .arg(state)
                .arg("--out")
                .arg(&out)
                .status()
                .with_context(|| format!("cannot run {}", binary.display()))?;
            if !status.success() {
                bail!("`controller token issue` failed: {status}");
            }
            let token = std::fs::read_to_string(&out)
                .with_context(|| format!("cannot read {}", out.display()))?;
            Ok(token.trim().to_string())
        })
        .collect()
}

/// A loopback port that was free a moment ago.
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot find a free loopback port")?;
    Ok(listener.local_addr()?)
}

impl ControllerProcess {
    /// Starts `controller serve`; its log goes to `log`.
    pub fn start(
        binary: &Path,
        manifests: &Path,
        state: &Path,
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let grpc_addr = free_port()?;
        let status_addr = free_port()?;
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let child = Command::new(binary)
            .arg("serve")
            .arg("--manifests")
            .arg(manifests)
            .arg("--state")
            .arg(state)
            .arg("--grpc-addr")
            .arg(grpc_addr.to_string())
            .arg("--status-addr")
            .arg(status_addr.to_string())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        Ok(Self {
            child,
            grpc_addr,
            status_addr,
            log,
        })
    }

    /// Waits until the status API says the first translation is published.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the controller exited during start-up ({status}); {}",
                    self.log_tail()
                );
            }
            if let Ok((200, _)) = http_get(self.status_addr, "/ready").await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the controller was not ready within {timeout:?}; {}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until `proxies` proxies have acknowledged generation `generation` (or later) of
    /// `type_url`, as the status API reports it.
    pub async fn wait_acked(
        &self,
        type_url: &str,
        generation: u64,
        proxies: usize,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let (code, body) = http_get(self.status_addr, "/status").await?;
            if code != 200 {
                bail!("GET /status answered {code}");
            }
            let status: Value = serde_json::from_str(&body).context("GET /status is not JSON")?;
            let acked = status["proxies"].as_array().map_or(0, |list| {
                list.iter()
                    .filter(|p| p["types"][type_url]["acked_version"].as_u64() >= Some(generation))
                    .count()
            });
            if acked >= proxies {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "only {acked} of {proxies} proxies acknowledged generation {generation} within {timeout:?}"
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// CPU time the controller used so far (user + system), from `/proc/<pid>/stat`.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let path = format!("/proc/{}/stat", self.child.id());
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        // The command name is in parentheses and may hold spaces: count fields after it.
        let after_name = text.rsplit_once(')').context("no command name")?.1;
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // Fields 14 and 15 of the line (utime, stime) are the 12th and 13th after the name.
        let ticks: u64 = [11, 12]
            .iter()
            .map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
            .sum::<Option<u64>>()
            .with_context(|| format!("{path} has no utime and stime"))?;
        Ok(Duration::from_secs_f64(
            ticks as f64 / clock_ticks_per_second(),
        ))
    }

    /// The controller's memory from `/proc/<pid>/status`.
    pub fn memory(&self) -> anyhow::Result<Memory> {
        let path = format!("/proc/{}/status", self.child.id());
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .with_context(|| format!("{path} has no {name}"))
        };
        Ok(Memory {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
        })
    }

    /// The last lines of the controller's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        format!("last lines of {}:\n{tail}", self.log.display())
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The kernel's clock tick for CPU times (`getconf CLK_TCK`; 100 on Linux nearly always).
fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A GET over HTTP/1.0 (so the body is neither chunked nor kept alive): status code and body.
async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(STATUS_TIMEOUT, exchange)
        .await
        .with_context(|| format!("GET {path} took more than {STATUS_TIMEOUT:?}"))??;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("the status API answered without headers")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context("the status API answered without a status code")?;
    Ok((code, body.to_string()))
}
