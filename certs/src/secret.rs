//! PEM material in `kubernetes.io/tls` Secrets: `tls.crt`, `tls.key` and `ca.crt`.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use crate::{CertKeyPair, Error};

pub const TLS_CERT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
pub const CA_CERT: &str = "ca.crt";
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// A certificate, its key and the CA bundle that verifies the other side, as Secret data.
pub fn tls_secret_data(pair: &CertKeyPair, ca_bundle_pem: &str) -> BTreeMap<String, ByteString> {
    BTreeMap::from([
        (TLS_CERT.to_owned(), ByteString(pair.cert_pem.clone().into_bytes())),
        (TLS_KEY.to_owned(), ByteString(pair.key_pem.clone().into_bytes())),
        (CA_CERT.to_owned(), ByteString(ca_bundle_pem.as_bytes().to_vec())),
    ])
}

/// One key of a Secret as PEM text; the error names the Secret and the key.
pub fn pem_field(secret: &Secret, key: &str) -> Result<String, Error> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let bytes = secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .ok_or_else(|| Error::MissingSecretKey { secret: name.clone(), key: key.to_owned() })?;
    String::from_utf8(bytes.0.clone())
        .map_err(|_| Error::NotUtf8 { secret: name, key: key.to_owned() })
}

/// The pair and CA bundle of a `kubernetes.io/tls` Secret, checked to be PEM.
pub fn decode_tls_secret(secret: &Secret) -> Result<(CertKeyPair, String), Error> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let pair = CertKeyPair {
        cert_pem: pem_field(secret, TLS_CERT)?,
        key_pem: pem_field(secret, TLS_KEY)?,
    };
    let ca = pem_field(secret, CA_CERT)?;
    crate::inspect::certificates(&pair.cert_pem, &format!("Secret {name} {TLS_CERT}"))?;
    crate::inspect::certificates(&ca, &format!("Secret {name} {CA_CERT}"))?;
    if !pair.key_pem.contains("PRIVATE KEY-----") {
        return Err(Error::BadKey { what: format!("Secret {name} {TLS_KEY}") });
    }
    Ok((pair, ca))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::issue::issue_ca;

    fn secret(data: BTreeMap<String, ByteString>) -> Secret {
        Secret {
            metadata: ObjectMeta { name: Some("demo-peer-tls".into()), ..Default::default() },
            data: Some(data),
            type_: Some(TLS_SECRET_TYPE.into()),
            ..Default::default()
        }
    }

    #[test]
    fn round_trip() {
        let ca = issue_ca("ca", time::OffsetDateTime::now_utc(), &Default::default()).unwrap();
        let (pair, bundle) =
            decode_tls_secret(&secret(tls_secret_data(&ca, &ca.cert_pem))).unwrap();
        assert_eq!(pair, ca);
        assert_eq!(bundle, ca.cert_pem);
    }

    #[test]
    fn missing_and_garbled_keys_are_named() {
        let ca = issue_ca("ca", time::OffsetDateTime::now_utc(), &Default::default()).unwrap();
        let mut data = tls_secret_data(&ca, &ca.cert_pem);
        data.remove(TLS_KEY);
        let err = decode_tls_secret(&secret(data)).unwrap_err().to_string();
        assert_eq!(err, "Secret demo-peer-tls has no tls.key");

        let mut data = tls_secret_data(&ca, &ca.cert_pem);
        data.insert(TLS_CERT.into(), ByteString(b"hello".to_vec()));
        let err = decode_tls_secret(&secret(data)).unwrap_err().to_string();
        assert!(err.starts_with("Secret demo-peer-tls tls.crt is not a PEM certificate"), "{err}");
        assert!(!err.contains("PRIVATE"), "{err}");
    }
}
