//! The etcd configuration file of a member pod (`etcd --config-file`), written by `member-init`
//! from the member's bootstrap entry: etcd's own images have no shell to assemble flags with.

use etcd_crds::EtcdOptions;
use serde_yaml::{Mapping, Value};

use super::bootstrap::{BootstrapEntry, InitialState};
use super::names::{
    CLIENT_PORT, DATA_DIR, METRICS_PORT, PEER_PORT, PEER_TLS_DIR, SERVER_TLS_DIR, member_urls,
};

/// Where a member runs: its cluster and namespace (for DNS names) and whether TLS is on.
#[derive(Clone, Debug)]
pub struct Placement {
    pub cluster: String,
    pub namespace: String,
    pub tls: bool,
}

/// Where a member's certificate, key and trusted CA are.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: String,
    pub key: String,
    pub ca: String,
}

impl TlsFiles {
    /// A `kubernetes.io/tls` Secret mounted at `dir`.
    pub fn secret_dir(dir: &str) -> Self {
        Self {
            cert: format!("{dir}/tls.crt"),
            key: format!("{dir}/tls.key"),
            ca: format!("{dir}/ca.crt"),
        }
    }

    fn block(&self) -> Value {
        let mut block = Mapping::new();
        block.insert("cert-file".into(), self.cert.clone().into());
        block.insert("key-file".into(), self.key.clone().into());
        block.insert("trusted-ca-file".into(), self.ca.clone().into());
        block.insert("client-cert-auth".into(), true.into());
        Value::Mapping(block)
    }
}

/// Everything one member's configuration says, wherever it runs (a pod, a local process).
#[derive(Clone, Debug)]
pub struct MemberConfig {
    pub name: String,
    pub data_dir: String,
    pub listen_peer: String,
    pub listen_client: String,
    pub listen_metrics: Option<String>,
    pub advertise_peer: String,
    pub advertise_client: String,
    /// `name=peerURL,...`
    pub initial_cluster: String,
    /// `new` or `existing`.
    pub state: &'static str,
    pub token: String,
    /// Server (client URLs) and peer TLS; `None` runs plain HTTP.
    pub tls: Option<(TlsFiles, TlsFiles)>,
}

impl MemberConfig {
    /// The YAML etcd reads with `--config-file`, with the cluster's tuning.
    pub fn render(&self, options: &EtcdOptions) -> String {
        let mut config = Mapping::new();
        let mut set = |key: &str, value: Value| {
            config.insert(key.into(), value);
        };
        set("name", self.name.clone().into());
        set("data-dir", self.data_dir.clone().into());
        set("listen-peer-urls", self.listen_peer.clone().into());
        set("listen-client-urls", self.listen_client.clone().into());
        if let Some(metrics) = &self.listen_metrics {
            set("listen-metrics-urls", metrics.clone().into());
        }
        set("initial-advertise-peer-urls", self.advertise_peer.clone().into());
        set("advertise-client-urls", self.advertise_client.clone().into());
        set("initial-cluster", self.initial_cluster.clone().into());
        set("initial-cluster-state", self.state.into());
        set("initial-cluster-token", self.token.clone().into());
        set("quota-backend-bytes", options.quota_backend_bytes.into());
        set("auto-compaction-mode", options.auto_compaction_mode.as_flag().into());
        set("auto-compaction-retention", options.auto_compaction_retention.clone().into());
        if let Some((server, peer)) = &self.tls {
            set("client-transport-security", server.block());
            set("peer-transport-security", peer.block());
        }
        for (flag, value) in &options.extra_args {
            set(flag.trim_start_matches('-'), typed(value));
        }
        serde_yaml::to_string(&config).unwrap_or_default()
    }
}

/// A value from `extraArgs` in the type etcd's YAML parser expects (numbers and booleans bare).
fn typed(value: &str) -> Value {
    if let Ok(n) = value.parse::<i64>() {
        return n.into();
    }
    match value {
        "true" => true.into(),
        "false" => false.into(),
        other => other.into(),
    }
}

/// The YAML config of the member `entry` names, in its pod.
pub fn render(entry: &BootstrapEntry, placement: &Placement, options: &EtcdOptions) -> String {
    let (peer_url, client_url) =
        member_urls(&placement.cluster, &placement.namespace, &entry.name, placement.tls);
    let scheme = if placement.tls { "https" } else { "http" };
    MemberConfig {
        name: entry.name.clone(),
        data_dir: DATA_DIR.into(),
        listen_peer: format!("{scheme}://0.0.0.0:{PEER_PORT}"),
        listen_client: format!("{scheme}://0.0.0.0:{CLIENT_PORT}"),
        listen_metrics: Some(format!("http://0.0.0.0:{METRICS_PORT}")),
        advertise_peer: peer_url,
        advertise_client: client_url,
        initial_cluster: entry.initial_cluster_flag(),
        state: match entry.state {
            InitialState::New => "new",
            InitialState::Existing => "existing",
        },
        token: entry.token.clone(),
        tls: placement
            .tls
            .then(|| (TlsFiles::secret_dir(SERVER_TLS_DIR), TlsFiles::secret_dir(PEER_TLS_DIR))),
    }
    .render(options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::ClusterState;
    use crate::membership::planner::Wanted;

    #[test]
    fn a_joining_member_gets_existing_state_dns_urls_and_tls_files() {
        let initial = vec![
            Wanted { name: "demo-0".into(), peer_url: "https://demo-0.demo.prod.svc:2380".into() },
            Wanted { name: "demo-1".into(), peer_url: "https://demo-1.demo.prod.svc:2380".into() },
        ];
        let entry = BootstrapEntry::new("demo-1", &initial, ClusterState::Existing, "tok");
        let mut options = EtcdOptions::default();
        options.extra_args.insert("snapshot-count".into(), "5000".into());
        let yaml = render(
            &entry,
            &Placement { cluster: "demo".into(), namespace: "prod".into(), tls: true },
            &options,
        );
        let config: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(config["name"], "demo-1");
        assert_eq!(config["initial-cluster-state"], "existing");
        assert_eq!(
            config["initial-cluster"],
            "demo-0=https://demo-0.demo.prod.svc:2380,demo-1=https://demo-1.demo.prod.svc:2380"
        );
        assert_eq!(config["initial-advertise-peer-urls"], "https://demo-1.demo.prod.svc:2380");
        assert_eq!(config["advertise-client-urls"], "https://demo-1.demo.prod.svc:2379");
        assert_eq!(
            config["peer-transport-security"]["trusted-ca-file"],
            "/etc/etcd-tls/peer/ca.crt"
        );
        assert_eq!(config["client-transport-security"]["client-cert-auth"], true);
        assert_eq!(config["snapshot-count"], 5000);
        assert_eq!(config["quota-backend-bytes"], 2147483648i64);
    }
}
