//! Issuing CAs and leaves with rcgen, always with an explicit validity window (rcgen's own
//! default is 1975–4096).

use std::fmt;
use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::Error;

/// A certificate and its private key, PEM-encoded. `Debug` never prints the key.
#[derive(Clone, PartialEq, Eq)]
pub struct CertKeyPair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for CertKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertKeyPair")
            .field("cert_pem", &format_args!("<{} bytes>", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// How long certificates live and when they are renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetimes {
    pub ca: Duration,
    pub leaf: Duration,
    /// Renew once this share of a certificate's lifetime has passed (in thousandths).
    pub renew_after_permille: u16,
    /// Backdating of `not_before`, so that clocks a little behind ours accept a fresh certificate.
    pub backdate: Duration,
}

impl Default for Lifetimes {
    /// CA ten years, leaves one year, renewed at two thirds of their life (about four months
    /// before they expire): room for a failed rotation to be noticed and fixed.
    fn default() -> Self {
        Self {
            ca: Duration::days(3650),
            leaf: Duration::days(365),
            renew_after_permille: 667,
            backdate: Duration::minutes(5),
        }
    }
}

/// What a leaf certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// Serves TLS (etcd client URLs, the webhook).
    Server,
    /// Authenticates to a server (the operator, users).
    Client,
    /// Both: etcd peers dial each other and accept each other's connections with one certificate.
    Peer,
}

/// A leaf to issue.
#[derive(Clone, Debug)]
pub struct LeafSpec<'a> {
    pub common_name: &'a str,
    /// DNS names and IP addresses.
    pub subject_alt_names: &'a [String],
    pub usage: Usage,
}

/// A self-signed CA.
pub fn issue_ca(
    common_name: &str,
    now: OffsetDateTime,
    lifetimes: &Lifetimes,
) -> Result<CertKeyPair, Error> {
    let failed = |source| Error::Issue { what: format!("CA {common_name}"), source };
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.distinguished_name.push(DnType::OrganizationName, "etcd-operator");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - lifetimes.backdate;
    params.not_after = now + lifetimes.ca;
    let key = KeyPair::generate().map_err(failed)?;
    let cert = params.self_signed(&key).map_err(failed)?;
    Ok(CertKeyPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// A leaf signed by `ca`.
pub fn issue_leaf(
    ca: &CertKeyPair,
    leaf: &LeafSpec<'_>,
    now: OffsetDateTime,
    lifetimes: &Lifetimes,
) -> Result<CertKeyPair, Error> {
    let failed = |source| Error::Issue { what: leaf.common_name.to_owned(), source };
    let ca_key =
        KeyPair::from_pem(&ca.key_pem).map_err(|_| Error::BadKey { what: "the CA key".into() })?;
    let issuer =
        Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(|_| Error::BadCertificate {
            what: "the CA certificate".into(),
            reason: "cannot be parsed".into(),
        })?;
    // Every certificate gets a fresh key; rcgen derives the serial from it, so serials never repeat.
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, leaf.common_name);
    params.subject_alt_names =
        leaf.subject_alt_names.iter().map(|name| san(name)).collect::<Result<_, _>>()?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = match leaf.usage {
        Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        Usage::Peer => {
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
        }
    };
    params.not_before = now - lifetimes.backdate;
    params.not_after = now + lifetimes.leaf;
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().map_err(failed)?;
    let cert = params.signed_by(&key, &issuer).map_err(failed)?;
    Ok(CertKeyPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// A DNS name or an IP address as a SAN.
fn san(name: &str) -> Result<SanType, Error> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    if !is_dns_name(name) {
        return Err(Error::BadSubjectAltName(name.to_owned()));
    }
    let dns = name.try_into().map_err(|_| Error::BadSubjectAltName(name.to_owned()))?;
    Ok(SanType::DnsName(dns))
}

/// A hostname (RFC 1123 labels, at most 253 characters), optionally a `*.` wildcard. rcgen takes
/// any ASCII, and a name with a space or `!` would only fail later, in a TLS handshake.
fn is_dns_name(name: &str) -> bool {
    let host = name.strip_prefix("*.").unwrap_or(name);
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    !host.is_empty() && name.len() <= 253 && host.split('.').all(label_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses_become_the_right_san_kind() {
        assert!(matches!(san("127.0.0.1"), Ok(SanType::IpAddress(_))));
        assert!(matches!(san("::1"), Ok(SanType::IpAddress(_))));
        for dns in ["localhost", "demo-0.demo.prod.svc", "*.demo.prod.svc", "a1"] {
            assert!(matches!(san(dns), Ok(SanType::DnsName(_))), "{dns}");
        }
    }

    #[test]
    fn malformed_names_are_refused_by_name() {
        for bad in ["bad name!", "", "-a.example", "a..b", "a.b-", "é.example", "*."] {
            let err = san(bad).unwrap_err().to_string();
            assert_eq!(err, format!("{bad} is neither a DNS name nor an IP address"));
        }
        assert!(san(&"a".repeat(64)).is_err(), "labels are at most 63 characters");
    }
}
