//! The synthetic mesh of the benchmark, written as manifests the controller's store reads.
//!
//! Layout on disk: one file per namespace (`ns-NNN.yaml`: the Namespace, one
//! AuthorizationPolicy, its Services and its pods) and one small file per probe pod
//! (`probe-NNNNN.yaml`), so that a round rewrites a single pod's file of ~500 bytes. Every
//! pod has `spec.nodeName` and `status.podIP` set, as the lab's kubelet stand-in writes them.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// First pod address; pod `i` gets this plus `i`.
const FIRST_POD_IP: Ipv4Addr = Ipv4Addr::new(10, 64, 0, 1);

/// Distinct service accounts per namespace, so identities vary as in a real cluster.
const SERVICE_ACCOUNTS_PER_NAMESPACE: usize = 10;

/// The `version` label every pod starts with; a round sets `r<round>` on its probe pod, which
/// changes the workload's canonical revision and so its resource.
const INITIAL_VERSION: &str = "v1";

/// How many objects of each kind, and how they spread.
#[derive(Clone, Copy, Debug)]
pub struct MeshShape {
    pub pods: usize,
    pub services: usize,
    pub namespaces: usize,
    pub nodes: usize,
    /// Pods that live in a file of their own and are changed by the rounds.
    pub probes: usize,
}

/// What the controller should serve for this shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpectedResources {
    /// Workloads plus services.
    pub addresses: usize,
    /// One policy per namespace.
    pub authorizations: usize,
}

/// One pod the rounds change.
#[derive(Clone, Debug)]
pub struct ProbePod {
    pub namespace: String,
    pub name: String,
    file: PathBuf,
    index: usize,
}

impl MeshShape {
    pub fn expected(&self) -> ExpectedResources {
        ExpectedResources {
            addresses: self.pods + self.services,
            authorizations: self.namespaces,
        }
    }

    fn namespace(&self, ns: usize) -> String {
        format!("ns-{ns:03}")
    }

    /// Services of namespace `ns`: service `s` lives in namespace `s % namespaces`.
    fn services_in(&self, ns: usize) -> usize {
        self.services / self.namespaces + usize::from(ns < self.services % self.namespaces)
    }

    /// Pod `i` lives in namespace `i % namespaces`, at position `i / namespaces` there.
    fn pod(&self, i: usize, version: &str) -> String {
        let ns = i % self.namespaces;
        let position = i / self.namespaces;
        let services = self.services_in(ns);
        // Pods of a namespace are dealt round-robin to its services' selectors.
        let app = if services == 0 {
            "none".to_string()
        } else {
            format!("app-{}", position % services)
        };
        let sa = position % SERVICE_ACCOUNTS_PER_NAMESPACE;
        let node = i % self.nodes + 1;
        let ip = Ipv4Addr::from(u32::from(FIRST_POD_IP) + i as u32);
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: pod-{i}\n  namespace: {}\n  \
             labels: {{app: {app}, version: {version}}}\nspec:\n  nodeName: node-{node}\n  \
             serviceAccountName: sa-{sa}\n  containers: [{{name: app, image: app, ports: \
             [{{containerPort: 8080}}]}}]\nstatus:\n  podIP: {ip}\n  phase: Running\n",
            self.namespace(ns)
        )
    }

    fn namespace_file(&self, ns: usize) -> String {
        let name = self.namespace(ns);
        let mut out = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  \
             labels: {{istio.io/dataplane-mode: ambient}}\n---\n\
             apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {{name: same-namespace, namespace: {name}}}\n\
             spec: {{rules: [{{from: [{{source: {{namespaces: [{name}]}}}}]}}]}}\n"
        );
        for s in 0..self.services_in(ns) {
            let _ = write!(
                out,
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{s}, namespace: {name}}}\n\
                 spec: {{selector: {{app: app-{s}}}, ports: [{{port: 80, targetPort: 8080}}]}}\n"
            );
        }
        for i in (ns..self.pods).step_by(self.namespaces) {
            if i >= self.probes {
                out.push_str("---\n");
                out.push_str(&self.pod(i, INITIAL_VERSION));
            }
        }
        out
    }

    /// Writes every manifest into `dir` and returns the probe pods.
    pub fn write(&self, dir: &Path) -> anyhow::Result<Vec<ProbePod>> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for ns in 0..self.namespaces {
            let path = dir.join(format!("{}.yaml", self.namespace(ns)));
            std::fs::write(&path, self.namespace_file(ns))
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        let mut probes = Vec::with_capacity(self.probes);
        for index in 0..self.probes {
            let probe = ProbePod {
                namespace: self.namespace(index % self.namespaces),
                name: format!("pod-{index}"),
                file: dir.join(format!("probe-{index:05}.yaml")),
                index,
            };
            std::fs::write(&probe.file, self.pod(index, INITIAL_VERSION))
                .with_context(|| format!("cannot write {}", probe.file.display()))?;
            probes.push(probe);
        }
        Ok(probes)
    }

    /// Rewrites a probe pod's file with a new `version` label, atomically (temporary file,
    /// then rename), as `meshctl` edits the directory. The temporary name starts with a dot,
    /// which the store ignores.
    pub fn set_probe_version(&self, probe: &ProbePod, version: &str) -> anyhow::Result<()> {
        let dir = probe
            .file
            .parent()
            .context("a probe file has a directory")?;
        let temporary = dir.join(format!(".probe-{:05}.tmp", probe.index));
        std::fs::write(&temporary, self.pod(probe.index, version))
            .with_context(|| format!("cannot write {}", temporary.display()))?;
        std::fs::rename(&temporary, &probe.file)
            .with_context(|| format!("cannot rename onto {}", probe.file.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pod_and_service_is_written_once() {
        let shape = MeshShape {
            pods: 23,
            services: 7,
            namespaces: 3,
            nodes: 4,
            probes: 5,
        };
        let text: String = (0..3).map(|ns| shape.namespace_file(ns)).collect();
        assert_eq!(text.matches("kind: Service\n").count(), 7);
        assert_eq!(text.matches("kind: Pod\n").count(), 23 - 5);
        assert_eq!(text.matches("kind: Namespace\n").count(), 3);
        assert!(
            shape
                .pod(4, "r1")
                .contains("labels: {app: app-1, version: r1}")
        );
        assert_eq!(
            shape.expected(),
            ExpectedResources {
                addresses: 30,
                authorizations: 3
            }
        );
    }
}
