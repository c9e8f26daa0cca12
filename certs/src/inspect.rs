//! Reading back what a PEM certificate says: validity window, SANs, issuer, serial.

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::Error;

/// The facts of one certificate that renewal and validation decide on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// DNS names and IP addresses, as text, sorted.
    pub subject_alt_names: Vec<String>,
    /// DER of the issuer's distinguished name.
    pub issuer: Vec<u8>,
    /// DER of the subject's distinguished name.
    pub subject: Vec<u8>,
    pub serial_hex: String,
    pub is_ca: bool,
}

/// All certificates of a PEM bundle, in order, as DER.
pub fn certificates(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| Error::BadCertificate { what: what.to_owned(), reason: err.to_string() })?;
    if certs.is_empty() {
        return Err(Error::BadCertificate {
            what: what.to_owned(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// The first certificate of a PEM text.
pub fn inspect(pem: &str, what: &str) -> Result<CertInfo, Error> {
    let der = certificates(pem, what)?.remove(0);
    inspect_der(&der, what)
}

pub fn inspect_der(der: &CertificateDer<'_>, what: &str) -> Result<CertInfo, Error> {
    let bad = |reason: String| Error::BadCertificate { what: what.to_owned(), reason };
    let (_, cert) = X509Certificate::from_der(der).map_err(|err| bad(err.to_string()))?;
    let mut subject_alt_names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => subject_alt_names.push((*dns).to_owned()),
                GeneralName::IPAddress(bytes) => subject_alt_names.push(ip_text(bytes)),
                _ => {}
            }
        }
    }
    subject_alt_names.sort();
    Ok(CertInfo {
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        subject_alt_names,
        issuer: cert.issuer().as_raw().to_vec(),
        subject: cert.subject().as_raw().to_vec(),
        serial_hex: cert.raw_serial_as_string(),
        is_ca: cert.is_ca(),
    })
}

fn ip_text(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).unwrap_or_default()).to_string(),
        16 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).unwrap_or_default()).to_string(),
        _ => format!("{bytes:02x?}"),
    }
}

/// Whether `cert` is signed by `ca` (signature checked, not just names compared).
pub fn is_signed_by(cert: &CertificateDer<'_>, ca: &CertificateDer<'_>) -> bool {
    let (Ok((_, cert)), Ok((_, ca))) =
        (X509Certificate::from_der(cert), X509Certificate::from_der(ca))
    else {
        return false;
    };
    cert.verify_signature(Some(ca.public_key())).is_ok()
}
