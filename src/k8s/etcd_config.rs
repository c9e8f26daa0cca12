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

fn tls_block(dir: &str) -> Value {
    let mut block = Mapping::new();
    block.insert("cert-file".into(), format!("{dir}/tls.crt").into());
    block.insert("key-file".into(), format!("{dir}/tls.key").into());
    block.insert("trusted-ca-file".into(), format!("{dir}/ca.crt").into());
    block.insert("client-cert-auth".into(), true.into());
    Value::Mapping(block)
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

/// The YAML config of the member `entry` names.
pub fn render(entry: &BootstrapEntry, placement: &Placement, options: &EtcdOptions) -> String {
    let (peer_url, client_url) =
        member_urls(&placement.cluster, &placement.namespace, &entry.name, placement.tls);
    let scheme = if placement.tls { "https" } else { "http" };
    let mut config = Mapping::new();
    let mut set = |key: &str, value: Value| {
        config.insert(key.into(), value);
    };
    set("name", entry.name.clone().into());
    set("data-dir", DATA_DIR.into());
    set("listen-peer-urls", format!("{scheme}://0.0.0.0:{PEER_PORT}").into());
    set("listen-client-urls", format!("{scheme}://0.0.0.0:{CLIENT_PORT}").into());
    set("listen-metrics-urls", format!("http://0.0.0.0:{METRICS_PORT}").into());
    set("initial-advertise-peer-urls", peer_url.into());
    set("advertise-client-urls", client_url.into());
    set("initial-cluster", entry.initial_cluster_flag().into());
    set(
        "initial-cluster-state",
        match entry.state {
            InitialState::New => "new",
            InitialState::Existing => "existing",
        }
        .into(),
    );
    set("initial-cluster-token", entry.token.clone().into());
    set("quota-backend-bytes", options.quota_backend_bytes.into());
    set("auto-compaction-mode", options.auto_compaction_mode.as_flag().into());
    set("auto-compaction-retention", options.auto_compaction_retention.clone().into());
    if placement.tls {
        set("client-transport-security", tls_block(SERVER_TLS_DIR));
        set("peer-transport-security", tls_block(PEER_TLS_DIR));
    }
    for (flag, value) in &options.extra_args {
        set(flag.trim_start_matches('-'), typed(value));
    }
    serde_yaml::to_string(&config).unwrap_or_default()
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
