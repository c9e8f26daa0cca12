//! The etcd configuration file of a member pod, written by `member-init` from the member's
//! bootstrap entry: etcd's own images have no shell to assemble flags with.

use etcd_crds::EtcdOptions;

use super::bootstrap::BootstrapEntry;
use crate::etcd::config::{MemberConfig, TlsFiles};
use crate::names::{
    CLIENT_PORT, DATA_DIR, METRICS_PORT, PEER_PORT, PEER_TLS_DIR, SERVER_TLS_DIR, member_urls,
};

/// Where a member runs: its cluster and namespace (for DNS names), whether TLS is on, and the
/// only common name its peer listener lets in (when the operator issued the certificates).
#[derive(Clone, Debug)]
pub struct Placement {
    pub cluster: String,
    pub namespace: String,
    pub tls: bool,
    pub peer_common_name: Option<String>,
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
        state: entry.state,
        token: entry.token.clone(),
        tls: placement.tls.then(|| {
            let peer = TlsFiles {
                allowed_cn: placement.peer_common_name.clone(),
                ..TlsFiles::secret_dir(PEER_TLS_DIR)
            };
            (TlsFiles::secret_dir(SERVER_TLS_DIR), peer)
        }),
    }
    .render(options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::ClusterState;
    use crate::membership::planner::Wanted;

    /// demo-1's configuration, joining `initial` in namespace prod with TLS: parsed, and as text.
    fn rendered(initial: &[Wanted], options: &EtcdOptions) -> (serde_yaml::Value, String) {
        let entry = BootstrapEntry::new("demo-1", initial, ClusterState::Existing, "tok");
        let placement = Placement {
            cluster: "demo".into(),
            namespace: "prod".into(),
            tls: true,
            peer_common_name: Some("demo-peer".into()),
        };
        let yaml = render(&entry, &placement, options);
        (serde_yaml::from_str(&yaml).unwrap(), yaml)
    }

    #[test]
    fn a_joining_member_gets_existing_state_dns_urls_and_tls_files() {
        let initial = vec![
            Wanted { name: "demo-0".into(), peer_url: "https://demo-0.demo.prod.svc:2380".into() },
            Wanted { name: "demo-1".into(), peer_url: "https://demo-1.demo.prod.svc:2380".into() },
        ];
        let mut options = EtcdOptions::default();
        options.extra_args.insert("snapshot-count".into(), "5000".into());
        let (config, _) = rendered(&initial, &options);
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
        // Only the peer certificate speaks raft; clients keep any certificate of the CA.
        assert_eq!(config["peer-transport-security"]["allowed-cn"][0], "demo-peer");
        assert!(config["client-transport-security"].get("allowed-cn").is_none());
        assert_eq!(config["snapshot-count"], 5000);
        assert_eq!(config["quota-backend-bytes"], 2147483648i64);
    }

    /// An object admitted before extraArgs became a list of tuning flags may still carry others:
    /// the operator's keys win, and what is not tuning is never written.
    #[test]
    fn extra_args_never_override_the_operators_keys() {
        let initial = [Wanted {
            name: "demo-1".into(),
            peer_url: "https://demo-1.demo.prod.svc:2380".into(),
        }];
        let mut options = EtcdOptions::default();
        for (flag, value) in [
            ("name", "stolen"),
            ("data-dir", "/tmp/elsewhere"),
            ("listen-client-http-urls", "http://0.0.0.0:2390"),
            ("enable-pprof", "true"),
            ("heartbeat-interval", "200"),
        ] {
            options.extra_args.insert(flag.into(), value.into());
        }
        let (config, yaml) = rendered(&initial, &options);
        assert_eq!(config["name"], "demo-1");
        assert_ne!(config["data-dir"], "/tmp/elsewhere");
        assert!(config.get("listen-client-http-urls").is_none(), "{yaml}");
        assert!(config.get("enable-pprof").is_none(), "{yaml}");
        assert_eq!(config["heartbeat-interval"], 200);
    }
}
