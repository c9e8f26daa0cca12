//! Names, ports and labels shared by the objects of a cluster, in one place.

use etcd_crds::EtcdCluster;

/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "etcd-operator";
pub const CLIENT_PORT: i32 = 2379;
pub const PEER_PORT: i32 = 2380;
/// Plain-HTTP metrics and health endpoint of each member (probes and Prometheus).
pub const METRICS_PORT: i32 = 2381;

/// Where the bootstrap ConfigMap, the TLS Secrets, the config and the data are mounted.
pub const BOOTSTRAP_DIR: &str = "/etc/etcd-bootstrap";
pub const PEER_TLS_DIR: &str = "/etc/etcd-tls/peer";
pub const SERVER_TLS_DIR: &str = "/etc/etcd-tls/server";
pub const CONFIG_DIR: &str = "/var/run/etcd";
/// The seal key (member-init only): see [`seal_secret`].
pub const SEAL_DIR: &str = "/etc/etcd-operator/seal";
/// The key of the seal Secret that holds the key.
pub const SEAL_KEY: &str = "key";
pub const CONFIG_FILE: &str = "/var/run/etcd/etcd.conf.yaml";
/// The data volume's mount point; etcd's data directory is a child of it, so that a restore can
/// write the directory under a temporary name on the same volume and rename it into place.
pub const DATA_MOUNT: &str = "/var/lib/etcd";
pub const DATA_DIR: &str = "/var/lib/etcd/data";

/// The volume holding a member's data: the StatefulSet's claim template, or an emptyDir.
pub const DATA_VOLUME: &str = "data";

/// The claim the StatefulSet controller makes for `member` from the [`DATA_VOLUME`] template
/// (`<template>-<pod>`).
pub fn data_claim(member: &str) -> String {
    format!("{DATA_VOLUME}-{member}")
}

/// The member a data claim belongs to, as [`data_claim`] names it.
pub fn member_of_claim(claim: &str) -> Option<&str> {
    claim.strip_prefix(DATA_VOLUME)?.strip_prefix('-')
}

pub fn name(cluster: &EtcdCluster) -> String {
    cluster.metadata.name.clone().unwrap_or_default()
}

pub fn namespace(cluster: &EtcdCluster) -> String {
    cluster.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned())
}

/// The Secret holding the key that seals a bootstrap entry which forces a new cluster
/// (`k8s::bootstrap::BootstrapEntry::seal`). Made at a cluster's first recovery, mounted into
/// member-init only.
pub fn seal_secret(cluster: &str) -> String {
    format!("{cluster}-bootstrap-seal")
}

/// The ConfigMap holding each member's bootstrap entry (`NAME-N.json`).
pub fn bootstrap_configmap(cluster: &str) -> String {
    format!("{cluster}-bootstrap")
}

/// A short, stable name for some content (a CA bundle, a pod template) carried in an annotation:
/// the first 12 bytes of its SHA-256, in hexadecimal.
pub fn fingerprint(content: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, content);
    digest.as_ref()[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// Pod template annotation: the fingerprint of the CA bundle the members were started with.
pub const TRUST_BUNDLE_ANNOTATION: &str = "etcd.etcd.io/trust-bundle";

/// Pod template annotation: the storage size whose file system growth needed the members
/// restarted (a volume whose driver cannot grow a mounted file system finishes when its pod
/// starts again), so that a new value rolls them through the health-gated roll.
pub const FILESYSTEM_RESIZE_ANNOTATION: &str = "etcd.etcd.io/filesystem-resize";

/// StatefulSet annotation: the fingerprint of its pod template less the member-init image
/// (`k8s::roll::template_hash`), so a pass knows whether it changes what the members run.
pub const TEMPLATE_HASH_ANNOTATION: &str = "etcd.etcd.io/template-hash";

/// The label every object the operator makes carries; its watches select on it.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "etcd-operator");

/// `MANAGED_BY` as a label selector.
pub fn managed_by_selector() -> String {
    format!("{}={}", MANAGED_BY.0, MANAGED_BY.1)
}

/// Labels every object of a cluster carries; the first two select its pods.
pub fn labels(cluster: &str) -> std::collections::BTreeMap<String, String> {
    [("app.kubernetes.io/name", "etcd"), ("app.kubernetes.io/instance", cluster), MANAGED_BY]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The pod selector of a cluster, also the scale subresource's `status.selector`.
pub fn selector(cluster: &str) -> std::collections::BTreeMap<String, String> {
    labels(cluster).into_iter().filter(|(k, _)| k != "app.kubernetes.io/managed-by").collect()
}

/// The pod selector as a label selector string (`a=b,c=d`).
pub fn selector_string(cluster: &str) -> String {
    selector(cluster).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// A member's peer and client URLs through the headless Service.
pub fn member_urls(cluster: &str, namespace: &str, member: &str, tls: bool) -> (String, String) {
    let scheme = if tls { "https" } else { "http" };
    let host = format!("{member}.{}.{namespace}.svc", etcd_certs::cluster::peer_service(cluster));
    (format!("{scheme}://{host}:{PEER_PORT}"), format!("{scheme}://{host}:{CLIENT_PORT}"))
}

/// An RFC 1123 label, as a namespace's name must be: 1–63 lowercase letters, digits and `-`,
/// starting and ending with a letter or digit.
pub fn is_dns_label(name: &str) -> bool {
    let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=63).contains(&name.len())
        && name.chars().all(|c| alphanumeric(c) || c == '-')
        && name.starts_with(alphanumeric)
        && name.ends_with(alphanumeric)
}

/// Whether `pod` is the name the StatefulSet of `cluster` gives one of its pods,
/// `<cluster>-<ordinal>`. The selector's labels alone do not say so: Bitnami's etcd chart labels
/// its pods and claims `app.kubernetes.io/name=etcd, app.kubernetes.io/instance=<release>` too.
pub fn is_member_of(cluster: &str, pod: &str) -> bool {
    pod.strip_prefix(cluster).and_then(|rest| rest.strip_prefix('-')).is_some_and(|ordinal| {
        !ordinal.is_empty()
            && ordinal.len() <= 10
            && ordinal.bytes().all(|b| b.is_ascii_digit())
            && (ordinal == "0" || !ordinal.starts_with('0'))
    })
}

/// Whether `claim` is the data claim of a member of `cluster` ([`data_claim`]).
pub fn is_member_claim(cluster: &str, claim: &str) -> bool {
    member_of_claim(claim).is_some_and(|member| is_member_of(cluster, member))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_and_claims_are_the_statefulsets_own() {
        assert!(is_member_of("main", "main-0"));
        assert!(is_member_of("main", "main-10"));
        for other in ["main-etcd-0", "main-", "main-01", "mainx-0", "main-0a", "other-0"] {
            assert!(!is_member_of("main", other), "{other}");
        }
        assert!(is_member_claim("main", "data-main-2"));
        assert!(!is_member_claim("main", "data-main-etcd-0"), "Bitnami's release main");
        assert!(!is_member_claim("main", "main-2"));
    }

    #[test]
    fn namespace_names() {
        assert!(is_dns_label("tenant-a"));
        assert!(is_dns_label("a"));
        for bad in ["", "Tenant", "a_b", "-a", "a-", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad:?}");
        }
    }
}
