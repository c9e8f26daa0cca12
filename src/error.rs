//! The binary's error type. Each module keeps its own error enum; this one gathers them so that
//! `main` prints one line naming what went wrong.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} is not implemented yet (tracked in issue {issue})")]
    NotImplemented { what: &'static str, issue: u32 },
    #[error("cannot read {path}: {source}")]
    ReadFile { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    WriteFile { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid {kind}: {source}")]
    ParseYaml { path: PathBuf, kind: &'static str, source: serde_yaml::Error },
    #[error(transparent)]
    Crds(#[from] etcd_crds::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::Error),
    #[error(transparent)]
    Server(#[from] crate::server::Error),
    #[error(transparent)]
    Membership(#[from] crate::membership::Error),
    #[error(transparent)]
    Backup(#[from] crate::backup::Error),
    #[error("{0}")]
    Usage(&'static str),
    #[error("{flag}: {reason}")]
    BadArgument { flag: &'static str, reason: String },
    #[error(transparent)]
    MemberInit(#[from] crate::k8s::member_init::Error),
    #[error("cannot {what}: {source}")]
    Kube { what: &'static str, source: kube::Error },
    #[error(transparent)]
    Leader(#[from] crate::controller::leader::Error),
    #[error("lost the leader Lease; exiting so that a restarted replica rejoins the election")]
    LostLeadership,
    #[error("a task failed: {0}")]
    Task(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error and its causes on one line: `a: b: c`.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // thiserror messages often already embed their source; do not print it twice.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
