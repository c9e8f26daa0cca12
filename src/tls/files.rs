//! Writing PEM material to disk: private keys readable by the owner only.

use std::io::Write;
use std::path::Path;

use super::Error;

/// Writes `files` (name, PEM) into `dir`, creating it; `*.key` files get mode 0600, and every file
/// is written in full to a temporary name and renamed, so a reader never sees half a key.
pub fn write_pem_files(dir: &Path, files: &[(&str, String)]) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Write { path: dir.to_owned(), source })?;
    for (name, pem) in files {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        let write_err = |source| Error::Write { path: path.clone(), source };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(if name.ends_with(".key") { 0o600 } else { 0o644 });
        }
        let mut file = options.open(&tmp).map_err(write_err)?;
        file.write_all(pem.as_bytes()).map_err(write_err)?;
        file.sync_all().map_err(write_err)?;
        std::fs::rename(&tmp, &path).map_err(write_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(unix)]
    fn keys_are_private_and_certificates_readable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        write_pem_files(dir.path(), &[("a.key", "k".into()), ("a.crt", "c".into())]).unwrap();
        let mode =
            |n: &str| std::fs::metadata(dir.path().join(n)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("a.key"), 0o600);
        assert_eq!(mode("a.crt"), 0o644);
        assert_eq!(std::fs::read_to_string(dir.path().join("a.key")).unwrap(), "k");
    }
}
