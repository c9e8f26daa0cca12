//! The operator's TLS at run time: PEM files on disk (`certs issue`, `webhook --cert-dir`,
//! `local`), the webhook Secret and caBundle injection, and each cluster's PKI Secrets.

pub mod bundle;
pub mod cert_dir;
pub mod cluster_secrets;
pub mod files;
pub mod webhook_secret;

use std::path::PathBuf;

/// Errors of run-time TLS handling. None carries key material.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Pki(#[from] etcd_certs::Error),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "{dir} holds only part of a certificate ({missing} is missing); remove the directory's PEM files or complete them"
    )]
    PartialDir { dir: PathBuf, missing: &'static str },
    #[error("Kubernetes API call failed ({what}): {source}")]
    Kube { what: String, source: kube::Error },
    /// A Secret of the cluster's PKI exists under another owner ([`crate::ownership`]).
    #[error("{0}")]
    NotOwned(String),
    /// A Secret someone else makes is not there yet (the webhook's, when the installer issues it).
    #[error("{0}")]
    NotYetThere(String),
}

impl Error {
    /// A failed API call that may succeed by waiting (see [`crate::retry::transient`]).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Kube { source, .. } => crate::retry::transient(source),
            Error::NotYetThere(_) => true,
            _ => false,
        }
    }
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube { what, source }
}

fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409)
}
