//! Admission policy for etcd-operator: validation and defaulting of EtcdCluster, EtcdBackup and
//! EtcdRestore as pure functions over the API types, and the axum routes that serve them as
//! AdmissionReview v1 webhooks.

// Pure code: nothing here needs `unsafe`, so nothing may use it.
#![forbid(unsafe_code)]

pub mod access;
pub mod backup;
pub mod cluster;
pub mod destinations;
pub mod images;
pub mod mutate;
pub mod policy;
pub mod quantity;
pub mod restore;
pub mod review;
pub mod routes;
pub mod verdict;

pub use access::Authorizer;
pub use destinations::KnownBackups;
pub use policy::Policy;
pub use routes::{MAX_BODY_BYTES, router};
pub use verdict::Verdict;

/// A request that cannot be answered with an AdmissionReview (HTTP 400). Everything else, a
/// spec that does not parse included, is answered with a denial that says why.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the body is not UTF-8, so not JSON: {0}")]
    NotText(#[from] std::str::Utf8Error),
    #[error("the body is not an AdmissionReview: {0}")]
    NotAReview(#[from] serde_json::Error),
    #[error(
        "the body is a {kind} of apiVersion {api_version}; this webhook answers AdmissionReview \
         of apiVersion {}",
        review::API_VERSION
    )]
    Version { api_version: String, kind: String },
    #[error("the AdmissionReview has no request")]
    NoRequest,
}
