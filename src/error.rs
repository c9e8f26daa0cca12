//! The binary's error type. Each module keeps its own error enum; this one gathers them so that
//! `main` prints one line naming what went wrong.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
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
    #[error(transparent)]
    Run(#[from] crate::controller::run::Error),
    #[error("{0}")]
    Output(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The process's exit code: 1, or what the failing step gives its callers to read (an init
    /// container's exit code is in its pod's status).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::MemberInit(err) => err.exit_code(),
            _ => 1,
        }
    }
}
