//! The PKI of one etcd cluster: a CA, a peer certificate covering every member's DNS name, a
//! server certificate for the client Service and the members, and client certificates for the
//! operator and for users.

use time::OffsetDateTime;

use crate::issue::{LeafSpec, Usage, issue_ca, issue_leaf};
use crate::{CertKeyPair, Error, Lifetimes};

/// What a cluster's certificates must cover.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClusterPkiRequest {
    pub cluster: String,
    pub namespace: String,
    /// Ordinals `0..max_members` are covered, so scaling up never needs a new peer certificate.
    pub max_members: u32,
    /// Further DNS names or IP addresses for the peer and server certificates.
    pub extra_sans: Vec<String>,
}

/// The material of one cluster, as the operator stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterPki {
    pub ca: CertKeyPair,
    pub peer: CertKeyPair,
    pub server: CertKeyPair,
    /// The operator's own client certificate.
    pub client: CertKeyPair,
    /// A client certificate for people and applications.
    pub user_client: CertKeyPair,
}

/// One certificate of a cluster's PKI; each is kept in a Secret of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PkiPart {
    Ca,
    Peer,
    Server,
    /// The operator's own client certificate.
    Client,
    /// A client certificate for people and applications.
    UserClient,
}

impl PkiPart {
    pub const ALL: [PkiPart; 5] =
        [Self::Ca, Self::Peer, Self::Server, Self::Client, Self::UserClient];
    /// Every part but the CA: the certificates the CA signs.
    pub const LEAVES: [PkiPart; 4] = [Self::Peer, Self::Server, Self::Client, Self::UserClient];

    /// The Secret that holds this part for `cluster`.
    pub fn secret_name(self, cluster: &str) -> String {
        match self {
            Self::Ca => format!("{cluster}-ca"),
            Self::Peer => format!("{cluster}-peer-tls"),
            Self::Server => format!("{cluster}-server-tls"),
            Self::Client => format!("{cluster}-client-tls"),
            Self::UserClient => format!("{cluster}-user-client-tls"),
        }
    }
}

/// The headless Service that gives members their peer DNS names.
pub fn peer_service(cluster: &str) -> String {
    cluster.to_owned()
}

/// The Service clients connect to.
pub fn client_service(cluster: &str) -> String {
    format!("{cluster}-client")
}

/// The common name of a cluster's peer certificate. Members accept peer connections only from
/// a certificate of this name (etcd's `allowed-cn`), so the client certificates the same CA
/// signs cannot speak raft to them.
pub fn peer_common_name(cluster: &str) -> String {
    format!("{cluster}-peer")
}

/// Member `ordinal`'s name, which is also its pod's name.
pub fn member_name(cluster: &str, ordinal: u32) -> String {
    format!("{cluster}-{ordinal}")
}

/// A member's ordinal: the number after the last `-` of its name (`demo-12` → 12), as
/// [`member_name`] writes it.
pub fn member_ordinal(member: &str) -> Option<u32> {
    member.rsplit_once('-')?.1.parse().ok()
}

impl ClusterPkiRequest {
    /// Names in the peer certificate: the headless Service itself, and each member through it.
    pub fn peer_names(&self) -> Vec<String> {
        let (service, ns) = (peer_service(&self.cluster), &self.namespace);
        let mut names = vec![
            service.clone(),
            format!("{service}.{ns}.svc"),
            format!("{service}.{ns}.svc.cluster.local"),
        ];
        for ordinal in 0..self.max_members {
            let member = member_name(&self.cluster, ordinal);
            names.push(format!("{member}.{service}.{ns}.svc"));
            names.push(format!("{member}.{service}.{ns}.svc.cluster.local"));
        }
        names.extend(self.extra_sans.iter().cloned());
        names
    }

    /// Names in the server certificate: the client Service and every member.
    pub fn server_names(&self) -> Vec<String> {
        let (client, ns) = (client_service(&self.cluster), &self.namespace);
        let mut names = vec![
            client.clone(),
            format!("{client}.{ns}"),
            format!("{client}.{ns}.svc"),
            format!("{client}.{ns}.svc.cluster.local"),
        ];
        names.extend(self.peer_names());
        names
    }

    /// The names `part` must cover exactly; client certificates and the CA carry none.
    pub fn names_of(&self, part: PkiPart) -> Vec<String> {
        match part {
            PkiPart::Peer => self.peer_names(),
            PkiPart::Server => self.server_names(),
            PkiPart::Ca | PkiPart::Client | PkiPart::UserClient => Vec::new(),
        }
    }

    fn ca_name(&self) -> String {
        format!("etcd-ca {}/{}", self.namespace, self.cluster)
    }
}

impl ClusterPki {
    pub fn part(&self, part: PkiPart) -> &CertKeyPair {
        match part {
            PkiPart::Ca => &self.ca,
            PkiPart::Peer => &self.peer,
            PkiPart::Server => &self.server,
            PkiPart::Client => &self.client,
            PkiPart::UserClient => &self.user_client,
        }
    }

    pub fn set_part(&mut self, part: PkiPart, pair: CertKeyPair) {
        match part {
            PkiPart::Ca => self.ca = pair,
            PkiPart::Peer => self.peer = pair,
            PkiPart::Server => self.server = pair,
            PkiPart::Client => self.client = pair,
            PkiPart::UserClient => self.user_client = pair,
        }
    }

    /// The files `certs issue` writes and `local` uses, by name.
    pub fn files(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ca.crt", self.ca.cert_pem.clone()),
            ("peer.crt", self.peer.cert_pem.clone()),
            ("peer.key", self.peer.key_pem.clone()),
            ("server.crt", self.server.cert_pem.clone()),
            ("server.key", self.server.key_pem.clone()),
            ("client.crt", self.client.cert_pem.clone()),
            ("client.key", self.client.key_pem.clone()),
        ]
    }
}

/// A new CA and every leaf.
pub fn issue_cluster_pki(
    req: &ClusterPkiRequest,
    now: OffsetDateTime,
) -> Result<ClusterPki, Error> {
    let lifetimes = Lifetimes::default();
    let ca = issue_ca(&req.ca_name(), now, &lifetimes)?;
    reissue_cluster_leaves(req, ca, now, &lifetimes)
}

/// Every leaf again from an existing CA: rotation keeps the CA clients already trust.
pub fn reissue_cluster_leaves(
    req: &ClusterPkiRequest,
    ca: CertKeyPair,
    now: OffsetDateTime,
    lifetimes: &Lifetimes,
) -> Result<ClusterPki, Error> {
    let peer_names = req.peer_names();
    let server_names = req.server_names();
    let leaf = |common_name: &str, names: &[String], usage| {
        issue_leaf(&ca, &LeafSpec { common_name, subject_alt_names: names, usage }, now, lifetimes)
    };
    let peer = leaf(&peer_common_name(&req.cluster), &peer_names, Usage::Peer)?;
    // Serves the client URLs and also authenticates as a client: etcd's gRPC gateway dials its
    // own member with this certificate, which client-cert-auth refuses without clientAuth.
    let server = leaf(&format!("{}-server", req.cluster), &server_names, Usage::Peer)?;
    let client = leaf("etcd-operator", &[], Usage::Client)?;
    let user_client = leaf(&format!("{}-user", req.cluster), &[], Usage::Client)?;
    Ok(ClusterPki { ca, peer, server, client, user_client })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::{certificates, inspect, is_signed_by};

    /// The extended key usages of a PEM certificate, as OIDs.
    fn usages(pem: &str) -> Vec<String> {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let der = certificates(pem, "leaf").unwrap().remove(0);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        [(eku.server_auth, "serverAuth"), (eku.client_auth, "clientAuth")]
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, name)| name.to_owned())
            .collect()
    }

    #[test]
    fn the_server_certificate_also_authenticates_as_a_client_for_the_grpc_gateway() {
        let pki = issue_cluster_pki(&request(), OffsetDateTime::now_utc()).unwrap();
        assert_eq!(usages(&pki.server.cert_pem), ["serverAuth", "clientAuth"]);
        assert_eq!(usages(&pki.peer.cert_pem), ["serverAuth", "clientAuth"]);
        assert_eq!(usages(&pki.client.cert_pem), ["clientAuth"]);
    }

    fn request() -> ClusterPkiRequest {
        ClusterPkiRequest {
            cluster: "demo".into(),
            namespace: "prod".into(),
            max_members: 9,
            extra_sans: vec!["127.0.0.1".into()],
        }
    }

    #[test]
    fn peer_certificate_covers_every_ordinal_up_to_nine() {
        let now = OffsetDateTime::now_utc();
        let pki = issue_cluster_pki(&request(), now).unwrap();
        let names = inspect(&pki.peer.cert_pem, "peer").unwrap().subject_alt_names;
        for ordinal in 0..9 {
            assert!(names.contains(&format!("demo-{ordinal}.demo.prod.svc")));
            assert!(names.contains(&format!("demo-{ordinal}.demo.prod.svc.cluster.local")));
        }
        assert!(!names.iter().any(|n| n.starts_with("demo-9.")));
        for service in ["demo", "demo.prod.svc", "demo.prod.svc.cluster.local"] {
            assert!(names.contains(&service.to_owned()), "{service} missing");
        }
        assert!(names.contains(&"127.0.0.1".to_owned()));
        assert_eq!(names.len(), 22);
    }

    #[test]
    fn server_certificate_covers_the_client_service() {
        let pki = issue_cluster_pki(&request(), OffsetDateTime::now_utc()).unwrap();
        let names = inspect(&pki.server.cert_pem, "server").unwrap().subject_alt_names;
        for name in [
            "demo-client",
            "demo-client.prod.svc",
            "demo-client.prod.svc.cluster.local",
            "demo-0.demo.prod.svc",
        ] {
            assert!(names.contains(&name.to_owned()), "{name} missing");
        }
    }

    #[test]
    fn every_leaf_chains_to_the_ca_and_has_an_explicit_window() {
        let now = OffsetDateTime::now_utc();
        let pki = issue_cluster_pki(&request(), now).unwrap();
        let ca = certificates(&pki.ca.cert_pem, "ca").unwrap().remove(0);
        let ca_info = inspect(&pki.ca.cert_pem, "ca").unwrap();
        assert!(ca_info.is_ca);
        assert!(ca_info.not_after > now + time::Duration::days(3000));
        for leaf in [&pki.peer, &pki.server, &pki.client, &pki.user_client] {
            let der = certificates(&leaf.cert_pem, "leaf").unwrap().remove(0);
            assert!(is_signed_by(&der, &ca));
            let info = inspect(&leaf.cert_pem, "leaf").unwrap();
            assert!(!info.is_ca);
            assert!(info.not_before <= now && info.not_before > now - time::Duration::hours(1));
            let life = info.not_after - info.not_before;
            assert!(life > time::Duration::days(364) && life < time::Duration::days(366), "{life}");
        }
    }

    #[test]
    fn files_are_the_seven_the_cli_writes() {
        let pki = issue_cluster_pki(&request(), OffsetDateTime::now_utc()).unwrap();
        let names: Vec<&str> = pki.files().iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                "ca.crt",
                "peer.crt",
                "peer.key",
                "server.crt",
                "server.key",
                "client.crt",
                "client.key"
            ]
        );
    }

    #[test]
    fn reissue_keeps_the_ca_and_changes_the_leaves() {
        let now = OffsetDateTime::now_utc();
        let first = issue_cluster_pki(&request(), now).unwrap();
        let second =
            reissue_cluster_leaves(&request(), first.ca.clone(), now, &Lifetimes::default())
                .unwrap();
        assert_eq!(first.ca, second.ca);
        assert_ne!(first.peer.cert_pem, second.peer.cert_pem);
        let ca = certificates(&first.ca.cert_pem, "ca").unwrap().remove(0);
        let peer = certificates(&second.peer.cert_pem, "peer").unwrap().remove(0);
        assert!(is_signed_by(&peer, &ca));
    }
}
