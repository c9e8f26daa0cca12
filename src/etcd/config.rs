//! An etcd member's configuration file (`etcd --config-file`), the same wherever it runs (a pod,
//! a local process), and how a member joins: a new cluster or one that exists.

use etcd_crds::EtcdOptions;
use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};

/// A member by its name and peer URL: one entry of `--initial-cluster`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Peer {
    pub name: String,
    #[serde(rename = "peerURL")]
    pub peer_url: String,
}

/// `--initial-cluster`: `a=https://…,b=https://…`.
pub fn initial_cluster(peers: &[Peer]) -> String {
    peers.iter().map(|p| format!("{}={}", p.name, p.peer_url)).collect::<Vec<_>>().join(",")
}

/// How a member joins: a new cluster (static bootstrap) or one that exists
/// (`initial-cluster-state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterState {
    New,
    Existing,
    /// Restart on its own data as a cluster of one (`--force-new-cluster`): recovery from
    /// quorum loss. Same data, same keys, same cluster ID; every other member is forgotten.
    ForceNew,
}

impl ClusterState {
    pub fn as_flag(self) -> &'static str {
        match self {
            ClusterState::New => "new",
            ClusterState::Existing | ClusterState::ForceNew => "existing",
        }
    }
}

/// Where a member's certificate, key and trusted CA are.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: String,
    pub key: String,
    pub ca: String,
    /// The only common name a connecting certificate may carry (etcd's `allowed-cn`), when the
    /// CA also signs certificates that must not be let in here: the peer listener pins the peer
    /// certificate's name, so a client certificate of the same CA cannot speak raft. etcd 3.5
    /// and later enforce it; 3.4 reads no such key from a configuration file and ignores it.
    pub allowed_cn: Option<String>,
}

impl TlsFiles {
    /// A `kubernetes.io/tls` Secret mounted at `dir`.
    pub fn secret_dir(dir: &str) -> Self {
        Self {
            cert: format!("{dir}/tls.crt"),
            key: format!("{dir}/tls.key"),
            ca: format!("{dir}/ca.crt"),
            allowed_cn: None,
        }
    }

    fn block(&self) -> Value {
        let mut block = Mapping::new();
        block.insert("cert-file".into(), self.cert.clone().into());
        block.insert("key-file".into(), self.key.clone().into());
        block.insert("trusted-ca-file".into(), self.ca.clone().into());
        block.insert("client-cert-auth".into(), true.into());
        if let Some(name) = &self.allowed_cn {
            // A list: 3.5 and later read `[]string` and refuse to start on a bare string.
            block.insert("allowed-cn".into(), vec![Value::from(name.clone())].into());
        }
        Value::Mapping(block)
    }
}

/// etcd's own corruption checks, on unless the cluster's tuning says otherwise: at start a member
/// compares the hash of its data with its peers' and refuses to start on a mismatch (a changed
/// byte on disk has no checksum to catch it, and the member would serve it); after each
/// compaction the leader compares the members' hashes and raises the CORRUPT alarm. The keys are
/// 3.4's and 3.5's (3.4 and 3.5 before 3.5.5 ignore the second); 3.6 reads them as its feature
/// gates of the second name and refuses both spellings at once, so `feature-gates` in extraArgs
/// that names a gate keeps its own choice. extraArgs may also turn a key off.
const CORRUPTION_CHECKS: [(&str, &str); 2] = [
    ("experimental-initial-corrupt-check", "InitialCorruptCheck"),
    ("experimental-compact-hash-check-enabled", "CompactHashCheck"),
];

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
    pub state: ClusterState,
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
        let gates = options
            .extra_args
            .iter()
            .find(|(flag, _)| flag.trim_start_matches('-') == "feature-gates");
        for (key, gate) in CORRUPTION_CHECKS {
            if !gates.is_some_and(|(_, value)| value.contains(gate)) {
                set(key, true.into());
            }
        }
        // Tuning first, the operator's own keys after: a later key replaces an earlier one, so
        // nothing in extraArgs overrides them, and a flag outside the tuning list (on an object
        // admitted before the list existed) is never written.
        for (flag, value) in &options.extra_args {
            let flag = flag.trim_start_matches('-');
            if etcd_crds::TUNING_FLAGS.contains(&flag) {
                set(flag, typed(value));
            } else {
                tracing::warn!(member = %self.name, flag, "extraArgs: not a tuning flag; left out");
            }
        }
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
        set("initial-cluster-state", self.state.as_flag().into());
        set("initial-cluster-token", self.token.clone().into());
        if self.state == ClusterState::ForceNew {
            set("force-new-cluster", true.into());
        }
        set("quota-backend-bytes", options.quota_backend_bytes.into());
        set("auto-compaction-mode", options.auto_compaction_mode.as_flag().into());
        set("auto-compaction-retention", options.auto_compaction_retention.clone().into());
        if let Some((server, peer)) = &self.tls {
            set("client-transport-security", server.block());
            set("peer-transport-security", peer.block());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(extra: &[(&str, &str)]) -> serde_yaml::Value {
        let mut options = EtcdOptions::default();
        for (flag, value) in extra {
            options.extra_args.insert((*flag).into(), (*value).into());
        }
        let config = MemberConfig {
            name: "m".into(),
            data_dir: "/data".into(),
            listen_peer: "http://0.0.0.0:2380".into(),
            listen_client: "http://0.0.0.0:2379".into(),
            listen_metrics: None,
            advertise_peer: "http://m:2380".into(),
            advertise_client: "http://m:2379".into(),
            initial_cluster: "m=http://m:2380".into(),
            state: ClusterState::New,
            token: "t".into(),
            tls: None,
        };
        serde_yaml::from_str(&config.render(&options)).unwrap()
    }

    #[test]
    fn corruption_checks_are_on_unless_the_tuning_chooses() {
        let config = rendered(&[]);
        assert_eq!(config["experimental-initial-corrupt-check"], true);
        assert_eq!(config["experimental-compact-hash-check-enabled"], true);

        let off = rendered(&[("experimental-initial-corrupt-check", "false")]);
        assert_eq!(off["experimental-initial-corrupt-check"], false);
        assert_eq!(off["experimental-compact-hash-check-enabled"], true);

        // 3.6 refuses a key and its feature gate together: the gate named decides alone.
        let gated = rendered(&[("feature-gates", "InitialCorruptCheck=false")]);
        assert!(gated.get("experimental-initial-corrupt-check").is_none());
        assert_eq!(gated["experimental-compact-hash-check-enabled"], true);
        assert_eq!(gated["feature-gates"], "InitialCorruptCheck=false");
    }
}
