//! The lab's stand-in for kube-proxy: in every node, the `nat` chain [`SERVICES_CHAIN`] sends
//! each `VIP:port` to one of the service's endpoints, chosen at random per connection. Pods
//! outside the mesh reach services this way; enrolled pods never get here, their ztunnel
//! resolves the VIP itself.
//!
//! The whole set is replaced in one `iptables-restore --noflush` transaction per node: the
//! services chain and one chain per service port (`LAB-SVC-<hash>`) are declared (which
//! flushes them) and refilled, and chains of services that went away are declared and
//! deleted, so a connection never meets half an update. The same transaction refills the
//! hairpin chain ([`HAIRPIN_CHAIN`]): a pod whose connection to a VIP lands on itself is
//! masqueraded behind its gateway, as kube-proxy does.

use std::collections::BTreeSet;
use std::fmt::Write;

use super::desired::DesiredService;
use crate::command::{self, CommandError};
use crate::topology::{HAIRPIN_CHAIN, SERVICES_CHAIN};

/// The prefix of the per-service-port chains.
const SERVICE_CHAIN_PREFIX: &str = "LAB-SVC-";

/// The translation of every service, as `iptables-restore` input for the `nat` table,
/// without the deletion of stale chains (see [`restore_input`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceRules {
    /// The chains this rule set uses.
    pub chains: BTreeSet<String>,
    /// The rules, one `-A ...` line each.
    pub rules: Vec<String>,
    /// Every endpoint address, for the hairpin rules.
    pub endpoints: BTreeSet<std::net::Ipv4Addr>,
    /// Ports the lab cannot translate (named target ports), as `ns/name:port->target`.
    pub skipped: Vec<String>,
}

/// Builds the rules of every service with a VIP and endpoints.
pub fn render(services: &[DesiredService]) -> ServiceRules {
    let mut out = ServiceRules::default();
    for service in services {
        let Some(vip) = service.vip_v4() else {
            continue;
        };
        let endpoints = service.endpoint_ips();
        for port in service.parsed_ports() {
            let id = format!(
                "{}/{}:{}/{}",
                service.namespace, service.name, port.port, port.protocol
            );
            let Some(target) = port.target else {
                out.skipped.push(format!("{id}->{}", port.target_text));
                continue;
            };
            // No endpoints, no rule: the VIP is then unroutable in the lab and connections
            // fail at once.
            if endpoints.is_empty() {
                continue;
            }
            let chain = format!("{SERVICE_CHAIN_PREFIX}{:016x}", fnv1a(id.as_bytes()));
            let proto = &port.protocol;
            out.rules.push(format!(
                "-A {SERVICES_CHAIN} -d {vip}/32 -p {proto} -m {proto} --dport {} -m comment --comment \"{id}\" -j {chain}",
                port.port
            ));
            let count = endpoints.len();
            for (i, ip) in endpoints.iter().enumerate() {
                // Endpoint i of n takes 1/(n-i) of what the ones before it left: uniform.
                let pick = if i + 1 < count {
                    format!(
                        "-m statistic --mode random --probability {:.10} ",
                        1.0 / (count - i) as f64
                    )
                } else {
                    String::new()
                };
                out.rules.push(format!(
                    "-A {chain} -p {proto} {pick}-j DNAT --to-destination {ip}:{target}"
                ));
            }
            out.chains.insert(chain);
            out.endpoints.extend(endpoints.iter().copied());
        }
    }
    out
}

/// The `iptables-restore --noflush` input that installs `rules` and deletes the chains of
/// `existing` that `rules` no longer uses.
pub fn restore_input(rules: &ServiceRules, existing: &BTreeSet<String>) -> String {
    let stale: Vec<&String> = existing.difference(&rules.chains).collect();
    let mut text = String::from("*nat\n");
    let _ = writeln!(text, ":{SERVICES_CHAIN} - [0:0]");
    let _ = writeln!(text, ":{HAIRPIN_CHAIN} - [0:0]");
    for chain in rules.chains.iter().chain(stale.iter().copied()) {
        let _ = writeln!(text, ":{chain} - [0:0]");
    }
    for rule in &rules.rules {
        text.push_str(rule);
        text.push('\n');
    }
    for ip in &rules.endpoints {
        let _ = writeln!(
            text,
            "-A {HAIRPIN_CHAIN} -s {ip}/32 -d {ip}/32 -j MASQUERADE"
        );
    }
    for chain in stale {
        let _ = writeln!(text, "-X {chain}");
    }
    text.push_str("COMMIT\n");
    text
}

/// The service chains that exist in a node's `nat` table.
pub async fn existing_chains(netns: &str) -> Result<BTreeSet<String>, CommandError> {
    let saved = command::run_in(netns, "iptables-save", &["-t", "nat"]).await?;
    Ok(saved
        .lines()
        .filter_map(|line| line.strip_prefix(':'))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|chain| chain.starts_with(SERVICE_CHAIN_PREFIX))
        .map(str::to_string)
        .collect())
}

/// Installs `rules` in a node.
pub async fn apply(netns: &str, rules: &ServiceRules) -> Result<(), CommandError> {
    let existing = existing_chains(netns).await?;
    let input = restore_input(rules, &existing);
    command::run_with_input(
        "ip",
        &["netns", "exec", netns, "iptables-restore", "--noflush"],
        Some(&input),
    )
    .await?;
    Ok(())
}

/// FNV-1a, 64 bits: a stable name for a service port's chain across restarts.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web(endpoints: &[&str]) -> DesiredService {
        DesiredService {
            namespace: "shop".into(),
            name: "web".into(),
            vip: "10.96.0.10".into(),
            ports: vec!["80/TCP->8080".into(), "81/TCP->http".into()],
            endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn endpoints_are_chosen_uniformly() {
        let rules = render(&[web(&["a/10.244.1.2", "b/10.244.2.2", "c/10.244.2.3"])]);
        assert_eq!(rules.chains.len(), 1);
        assert_eq!(rules.skipped, ["shop/web:81/tcp->http"]);
        let text = rules.rules.join("\n");
        assert!(
            text.contains("-A LAB-SERVICES -d 10.96.0.10/32 -p tcp -m tcp --dport 80"),
            "{text}"
        );
        assert!(
            text.contains("--probability 0.3333333333 -j DNAT --to-destination 10.244.1.2:8080"),
            "{text}"
        );
        assert!(
            text.contains("--probability 0.5000000000 -j DNAT --to-destination 10.244.2.2:8080"),
            "{text}"
        );
        assert!(
            text.contains("-p tcp -j DNAT --to-destination 10.244.2.3:8080"),
            "{text}"
        );
    }

    #[test]
    fn services_without_endpoints_get_no_rule() {
        assert!(render(&[web(&[])]).rules.is_empty());
    }

    #[test]
    fn stale_chains_are_flushed_and_deleted() {
        let rules = render(&[web(&["a/10.244.1.2"])]);
        let current = rules.chains.iter().next().unwrap().clone();
        let existing = BTreeSet::from([current.clone(), "LAB-SVC-00000000deadbeef".to_string()]);
        let input = restore_input(&rules, &existing);
        assert!(
            input.starts_with("*nat\n:LAB-SERVICES - [0:0]\n:LAB-HAIRPIN - [0:0]\n"),
            "{input}"
        );
        assert!(
            input.contains("-A LAB-HAIRPIN -s 10.244.1.2/32 -d 10.244.1.2/32 -j MASQUERADE\n"),
            "{input}"
        );
        assert!(
            input.contains(":LAB-SVC-00000000deadbeef - [0:0]\n"),
            "{input}"
        );
        assert!(
            input.contains("-X LAB-SVC-00000000deadbeef\nCOMMIT\n"),
            "{input}"
        );
        assert!(!input.contains(&format!("-X {current}")), "{input}");
    }
}
