//! The control plane's PKI, laid out as kubeadm lays out `/etc/kubernetes/pki`: one CA that
//! signs the API server's serving certificate and every client certificate (the components', the
//! admin's, the node agent's), and the service-account signing key pair.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Where each file is.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

fn validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(30);
}

fn write(dir: &Path, name: &str, text: &str) -> Result<(), String> {
    std::fs::write(dir.join(name), text).map_err(|e| format!("{}/{name}: {e}", dir.display()))
}

/// Issues everything into `dir`: `ca.crt`/`ca.key`, `apiserver.crt`/`.key` for `names`,
/// `sa.key`/`sa.pub`, and `<client>.crt`/`.key` for each `(file, user, group)` of `clients`.
pub fn issue(dir: &Path, names: &[&str], clients: &[(&str, &str, &str)]) -> Result<Pki, String> {
    let err = |e: rcgen::Error| format!("cannot issue the cluster PKI: {e}");
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, "kubernetes");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut ca);
    let ca_key = KeyPair::generate().map_err(err)?;
    let ca_pem = ca.self_signed(&ca_key).map_err(err)?.pem();
    write(dir, "ca.crt", &ca_pem)?;
    write(dir, "ca.key", &ca_key.serialize_pem())?;
    let issuer = Issuer::new(ca, ca_key);

    let mut serving = CertificateParams::default();
    serving.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    serving.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName((*n).try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()
        .map_err(err)?;
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut serving);
    let key = KeyPair::generate().map_err(err)?;
    write(dir, "apiserver.crt", &serving.signed_by(&key, &issuer).map_err(err)?.pem())?;
    write(dir, "apiserver.key", &key.serialize_pem())?;

    for (file, user, group) in clients {
        let mut client = CertificateParams::default();
        client.distinguished_name.push(DnType::CommonName, *user);
        if !group.is_empty() {
            client.distinguished_name.push(DnType::OrganizationName, *group);
        }
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        validity(&mut client);
        let key = KeyPair::generate().map_err(err)?;
        write(dir, &format!("{file}.crt"), &client.signed_by(&key, &issuer).map_err(err)?.pem())?;
        write(dir, &format!("{file}.key"), &key.serialize_pem())?;
    }

    // Service-account tokens are signed with this key (ES256) and checked with its public half.
    let sa = KeyPair::generate().map_err(err)?;
    write(dir, "sa.key", &sa.serialize_pem())?;
    write(dir, "sa.pub", &sa.public_key_pem())?;
    Ok(Pki { dir: dir.to_owned() })
}

/// A kubeconfig for `server` that authenticates with the client certificate `file`.
pub fn kubeconfig(pki: &Pki, server: &str, file: &str, path: &Path) -> Result<(), String> {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-sim\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: {file}\n  user:\n    client-certificate: {cert}\n    client-key: {key}\ncontexts:\n- name: kube-sim\n  context:\n    cluster: kube-sim\n    user: {file}\n    namespace: default\ncurrent-context: kube-sim\n",
        ca = pki.path("ca.crt").display(),
        cert = pki.path(&format!("{file}.crt")).display(),
        key = pki.path(&format!("{file}.key")).display(),
    );
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}
