//! Where the etcd of each version is installed on this machine, for `local`: `etcd` on PATH
//! serves the version it reports, and each `--etcd VERSION=DIR` adds the etcd, etcdctl and
//! etcdutl in DIR. A version is trusted only as the binary itself reports it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why an installation cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--etcd {0}: expected VERSION=DIR, e.g. 3.5.1=/opt/etcd-v3.5.1")]
    Syntax(String),
    #[error("cannot run {path} --version: {source}")]
    Run { path: String, source: std::io::Error },
    #[error("{path} --version printed no \"etcd Version:\" line")]
    NoVersion { path: String },
    #[error("--etcd {given}={dir}: that etcd reports version {reported}")]
    Mismatch { given: String, dir: String, reported: String },
}

/// A `VERSION=DIR` argument.
pub fn parse_flag(text: &str) -> Result<(String, PathBuf), Error> {
    let (version, dir) = text.split_once('=').ok_or_else(|| Error::Syntax(text.to_owned()))?;
    let version = version.trim_start_matches('v');
    if version.is_empty() || dir.is_empty() {
        return Err(Error::Syntax(text.to_owned()));
    }
    Ok((version.to_owned(), PathBuf::from(dir)))
}

/// The etcd installations by version. `None` as a directory: the tools on PATH.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Installations {
    dirs: BTreeMap<String, Option<PathBuf>>,
}

impl Installations {
    /// `etcd` on PATH (when there is one) and each given `VERSION=DIR`, every version checked
    /// against what its etcd reports.
    pub fn discover(given: &[(String, PathBuf)]) -> Result<Self, Error> {
        let mut dirs = BTreeMap::new();
        if let Ok(version) = reported_version(Path::new("etcd")) {
            dirs.insert(version, None);
        }
        for (version, dir) in given {
            let reported = reported_version(&dir.join("etcd"))?;
            if reported != *version {
                return Err(Error::Mismatch {
                    given: version.clone(),
                    dir: dir.display().to_string(),
                    reported,
                });
            }
            dirs.insert(version.clone(), Some(dir.clone()));
        }
        Ok(Self { dirs })
    }

    /// The program `tool` (`etcd`, `etcdctl`, `etcdutl`) of `version`, if that version is here.
    pub fn tool(&self, version: &str, tool: &str) -> Option<PathBuf> {
        let dir = self.dirs.get(version)?;
        Some(dir.as_ref().map_or_else(|| PathBuf::from(tool), |dir| dir.join(tool)))
    }

    /// The directory holding `version`'s tools; `None` for PATH (or an unknown version).
    pub fn dir(&self, version: &str) -> Option<&Path> {
        self.dirs.get(version)?.as_deref()
    }

    pub fn has(&self, version: &str) -> bool {
        self.dirs.contains_key(version)
    }

    /// What is installed, for a message: `3.4.23 (PATH), 3.5.1 (/opt/etcd)`.
    pub fn describe(&self) -> String {
        if self.dirs.is_empty() {
            return "none".to_owned();
        }
        let one = |(version, dir): (&String, &Option<PathBuf>)| match dir {
            None => format!("{version} (PATH)"),
            Some(dir) => format!("{version} ({})", dir.display()),
        };
        self.dirs.iter().map(one).collect::<Vec<_>>().join(", ")
    }
}

/// The version `etcd --version` prints (`etcd Version: 3.5.1`).
pub fn reported_version(etcd: &Path) -> Result<String, Error> {
    let path = etcd.display().to_string();
    let output = std::process::Command::new(etcd)
        .arg("--version")
        .output()
        .map_err(|source| Error::Run { path: path.clone(), source })?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("etcd Version:"))
        .map(|version| version.trim().to_owned())
        .ok_or(Error::NoVersion { path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_version_equals_directory() {
        assert_eq!(parse_flag("v3.5.1=/opt/e").unwrap(), ("3.5.1".to_owned(), "/opt/e".into()));
        assert!(parse_flag("3.5.1").is_err());
        assert!(parse_flag("=/opt/e").is_err());
    }

    #[test]
    fn path_etcd_serves_the_version_it_reports() {
        let installs = Installations::discover(&[]).unwrap();
        let version = reported_version(Path::new("etcd")).unwrap();
        assert_eq!(installs.tool(&version, "etcdctl"), Some(PathBuf::from("etcdctl")));
        assert!(!installs.has("0.0.1"));
    }

    #[test]
    fn a_directory_whose_etcd_reports_another_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("etcd");
        std::fs::write(&fake, "#!/bin/sh\necho 'etcd Version: 3.4.23'\n").unwrap();
        let mut perms = std::fs::metadata(&fake).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&fake, perms).unwrap();
        let err = Installations::discover(&[("3.5.1".into(), dir.path().into())]).unwrap_err();
        assert!(err.to_string().contains("reports version 3.4.23"), "{err}");
    }
}
