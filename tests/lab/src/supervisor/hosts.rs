//! Name resolution for pods: `/etc/netns/<pod netns>/hosts`, which `ip netns exec` mounts over
//! `/etc/hosts` for every process started in the pod. Services resolve as `NAME` (same
//! namespace only), `NAME.NS`, `NAME.NS.svc` and `NAME.NS.svc.cluster.local`.
//!
//! The file is rewritten in place, not replaced: a running process sees the file the mount
//! pointed at when it started, so only a write to that same file reaches it.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::desired::DesiredService;
use crate::paths::etc_netns;

/// The cluster domain in service names.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// What goes in a pod's `resolv.conf`: the lab has no DNS server, so every name comes from the
/// hosts file, and a lookup that misses fails at once instead of leaving the lab.
const RESOLV_CONF: &str = "# The lab has no DNS server: names come from /etc/hosts.\nnameserver 127.0.0.1\noptions timeout:1 attempts:1\n";

/// Why a pod's files could not be written.
#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    /// The file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
}

/// The hosts file of pod `name` in `namespace` at `ip`.
pub fn render(namespace: &str, name: &str, ip: Ipv4Addr, services: &[DesiredService]) -> String {
    let mut text = String::from("# Written by the mesh lab; rewritten when services change.\n");
    text.push_str("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    text.push_str(&format!("{ip}\t{name}\n"));
    let mut services: Vec<&DesiredService> = services.iter().collect();
    services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    for service in services {
        let Some(vip) = service.vip_v4() else {
            continue;
        };
        let (svc, ns) = (&service.name, &service.namespace);
        let mut names = format!("{svc}.{ns}.svc.{CLUSTER_DOMAIN} {svc}.{ns}.svc {svc}.{ns}");
        if *ns == namespace {
            names.push(' ');
            names.push_str(svc);
        }
        text.push_str(&format!("{vip}\t{names}\n"));
    }
    text
}

/// Writes a pod's hosts file (in place when it exists) and, on first write, its `resolv.conf`.
pub fn write(netns: &str, content: &str) -> Result<(), HostsError> {
    let dir = etc_netns(netns);
    let error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| HostsError::Write { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(error(&dir))?;
    let hosts = dir.join("hosts");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&hosts)
        .map_err(error(&hosts))?;
    // One write: a reader sees the old content, nothing, or the new content.
    file.write_all(content.as_bytes()).map_err(error(&hosts))?;
    // `ip netns exec` mounts only over files that exist in /etc.
    let resolv = dir.join("resolv.conf");
    if Path::new("/etc/resolv.conf").exists() && !resolv.exists() {
        std::fs::write(&resolv, RESOLV_CONF).map_err(error(&resolv))?;
    }
    Ok(())
}

/// Removes a pod's `/etc/netns` directory.
pub fn remove(netns: &str) {
    let _ = std::fs::remove_dir_all(etc_netns(netns));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(namespace: &str, name: &str, vip: &str) -> DesiredService {
        DesiredService {
            namespace: namespace.into(),
            name: name.into(),
            vip: vip.into(),
            ports: vec![],
            endpoints: vec![],
        }
    }

    #[test]
    fn services_resolve_by_short_name_only_in_their_namespace() {
        let services = [
            service("shop", "web", "10.96.0.10"),
            service("other", "db", "10.96.0.11"),
        ];
        let text = render("shop", "client", Ipv4Addr::new(10, 244, 1, 2), &services);
        assert!(text.contains("10.244.1.2\tclient\n"), "{text}");
        assert!(
            text.contains("10.96.0.10\tweb.shop.svc.cluster.local web.shop.svc web.shop web\n"),
            "{text}"
        );
        assert!(
            text.contains("10.96.0.11\tdb.other.svc.cluster.local db.other.svc db.other\n"),
            "{text}"
        );
        assert!(text.contains("127.0.0.1\tlocalhost"), "{text}");
    }
}
