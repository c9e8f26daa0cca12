//! PKI for etcd-operator, as pure functions: certificate authorities and leaves issued with rcgen,
//! the decisions of when to re-issue, CA rollover through a trust bundle, and the encoding of it
//! all into `kubernetes.io/tls` Secrets. No Kubernetes or etcd I/O happens here.

// Pure code: nothing here needs `unsafe`, so nothing may use it.
#![forbid(unsafe_code)]

pub mod cluster;
pub mod inspect;
pub mod issue;
pub mod renewal;
pub mod resolver;
pub mod rollover;
pub mod secret;
pub mod validate;
pub mod webhook;

pub use cluster::{
    ClusterPki, ClusterPkiRequest, PkiPart, issue_cluster_pki, reissue_cluster_leaves,
};
pub use issue::{CertKeyPair, Lifetimes};
pub use renewal::{RenewalReason, needs_renewal};
pub use validate::{ValidationError, validate_tls_secret};
pub use webhook::{WebhookPki, issue_webhook_pki};

/// Errors of the PKI layer. None of them carries key material.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot issue the {what} certificate: {source}")]
    Issue { what: String, source: rcgen::Error },
    #[error("{what} is not a PEM certificate: {reason}")]
    BadCertificate { what: String, reason: String },
    #[error("{what} is not a PEM private key")]
    BadKey { what: String },
    #[error("Secret {secret} has no {key}")]
    MissingSecretKey { secret: String, key: String },
    #[error("Secret {secret} key {key} is not UTF-8 PEM")]
    NotUtf8 { secret: String, key: String },
    #[error("{0} is neither a DNS name nor an IP address")]
    BadSubjectAltName(String),
}
