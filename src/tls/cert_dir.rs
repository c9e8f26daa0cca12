//! The serving certificate of `etcd-operator webhook --cert-dir DIR`: loaded from DIR, or issued
//! into it (a CA and a serving certificate) when DIR holds none.

use std::path::Path;
use std::sync::Arc;

use etcd_certs::CertKeyPair;
use etcd_certs::resolver::certified_key;
use rustls::sign::CertifiedKey;

use super::Error;
use super::files::write_pem_files;

pub const CA_FILE: &str = "ca.crt";
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

/// Names a local webhook answers to when none are given.
pub fn default_names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
}

/// The serving pair in `dir`, issuing a new CA and certificate for `names` when there is none.
pub fn load_or_issue(dir: &Path, names: &[String]) -> Result<Arc<CertifiedKey>, Error> {
    let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
    let pair = match (cert.exists(), key.exists()) {
        (true, true) => CertKeyPair { cert_pem: read(&cert)?, key_pem: read(&key)? },
        (false, false) => {
            let pki = etcd_certs::issue_webhook_pki(names, time::OffsetDateTime::now_utc())?;
            write_pem_files(
                dir,
                &[
                    (CA_FILE, pki.ca.cert_pem.clone()),
                    (CERT_FILE, pki.serving.cert_pem.clone()),
                    (KEY_FILE, pki.serving.key_pem.clone()),
                ],
            )?;
            tracing::info!(dir = %dir.display(), ?names, "issued a webhook CA and serving certificate");
            pki.serving
        }
        (true, false) => return Err(Error::PartialDir { dir: dir.to_owned(), missing: KEY_FILE }),
        (false, true) => return Err(Error::PartialDir { dir: dir.to_owned(), missing: CERT_FILE }),
    };
    Ok(certified_key(&pair)?)
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_once_then_loads_the_same_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_issue(dir.path(), &default_names()).unwrap();
        let second = load_or_issue(dir.path(), &default_names()).unwrap();
        assert_eq!(first.cert, second.cert);
        assert!(dir.path().join(CA_FILE).exists());
    }

    #[test]
    fn half_a_pair_is_refused_with_the_missing_file_named() {
        let dir = tempfile::tempdir().unwrap();
        load_or_issue(dir.path(), &default_names()).unwrap();
        std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
        let err = load_or_issue(dir.path(), &default_names()).unwrap_err().to_string();
        assert!(err.contains("tls.key is missing"), "{err}");
    }
}
