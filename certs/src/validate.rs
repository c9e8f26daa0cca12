//! Checks of user-provided TLS Secrets (autoTLS off): present, parseable, chained to the CA they
//! carry, inside their validity window. The error is written for a status condition: a CamelCase
//! `reason` and a `message` naming the Secret and the key at fault (never key material).

use k8s_openapi::api::core::v1::Secret;
use time::OffsetDateTime;

use crate::inspect::{certificates, inspect, is_signed_by};
use crate::secret::{CA_CERT, TLS_CERT, decode_tls_secret};

/// Why a provided Secret cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    /// For a condition's `reason`: `SecretMissing`, `SecretInvalid`, `CertificateNotYetValid`,
    /// `CertificateExpired` or `CertificateUntrusted`.
    pub reason: &'static str,
    pub message: String,
}

impl ValidationError {
    fn new(reason: &'static str, message: String) -> Self {
        Self { reason, message }
    }
}

/// Checks the Secret called `name`, as read from the API (`None` when it does not exist).
pub fn validate_tls_secret(
    name: &str,
    secret: Option<&Secret>,
    now: OffsetDateTime,
) -> Result<(), ValidationError> {
    let Some(secret) = secret else {
        return Err(ValidationError::new("SecretMissing", format!("Secret {name} does not exist")));
    };
    let invalid = |err: crate::Error| {
        let text = err.to_string();
        // Errors from decoding already name the Secret.
        let message =
            if text.starts_with("Secret ") { text } else { format!("Secret {name}: {text}") };
        ValidationError::new("SecretInvalid", message)
    };
    let (pair, ca_bundle) = decode_tls_secret(secret).map_err(invalid)?;
    let info = inspect(&pair.cert_pem, TLS_CERT).map_err(invalid)?;
    if now < info.not_before {
        return Err(ValidationError::new(
            "CertificateNotYetValid",
            format!("Secret {name}: {TLS_CERT} is not valid before {}", info.not_before),
        ));
    }
    if now >= info.not_after {
        return Err(ValidationError::new(
            "CertificateExpired",
            format!("Secret {name}: {TLS_CERT} expired at {}", info.not_after),
        ));
    }
    let leaf = certificates(&pair.cert_pem, TLS_CERT).map_err(invalid)?.remove(0);
    let cas = certificates(&ca_bundle, CA_CERT).map_err(invalid)?;
    if !cas.iter().any(|ca| is_signed_by(&leaf, ca)) {
        return Err(ValidationError::new(
            "CertificateUntrusted",
            format!("Secret {name}: {TLS_CERT} is not signed by any CA in {CA_CERT}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use time::Duration;

    use super::*;
    use crate::issue::{LeafSpec, Usage, issue_ca, issue_leaf};
    use crate::secret::{TLS_KEY, tls_secret_data};
    use crate::{CertKeyPair, Lifetimes};

    fn secret_of(pair: &CertKeyPair, ca_pem: &str) -> Secret {
        Secret {
            metadata: ObjectMeta { name: Some("mine".into()), ..Default::default() },
            data: Some(tls_secret_data(pair, ca_pem)),
            ..Default::default()
        }
    }

    fn issued(now: OffsetDateTime) -> (CertKeyPair, CertKeyPair) {
        let lifetimes = Lifetimes::default();
        let ca = issue_ca("ca", now, &lifetimes).unwrap();
        let names = ["x".to_owned()];
        let spec = LeafSpec { common_name: "x", subject_alt_names: &names, usage: Usage::Server };
        let leaf = issue_leaf(&ca, &spec, now, &lifetimes).unwrap();
        (ca, leaf)
    }

    fn check(secret: &Secret, now: OffsetDateTime) -> Result<(), ValidationError> {
        validate_tls_secret("mine", Some(secret), now)
    }

    #[test]
    fn a_good_secret_passes() {
        let now = OffsetDateTime::now_utc();
        let (ca, leaf) = issued(now);
        assert_eq!(check(&secret_of(&leaf, &ca.cert_pem), now), Ok(()));
        // A rollover bundle (another CA first) still verifies.
        let other = issue_ca("other", now, &Lifetimes::default()).unwrap();
        let bundle = format!("{}{}", other.cert_pem, ca.cert_pem);
        assert_eq!(check(&secret_of(&leaf, &bundle), now), Ok(()));
    }

    #[test]
    fn each_fault_has_its_reason_and_names_the_secret() {
        let now = OffsetDateTime::now_utc();
        let (ca, leaf) = issued(now);
        let other = issue_ca("other", now, &Lifetimes::default()).unwrap();

        let missing = validate_tls_secret("mine", None, now).unwrap_err();
        assert_eq!(missing.reason, "SecretMissing");
        assert_eq!(missing.message, "Secret mine does not exist");

        let untrusted = check(&secret_of(&leaf, &other.cert_pem), now).unwrap_err();
        assert_eq!(untrusted.reason, "CertificateUntrusted");
        assert_eq!(untrusted.message, "Secret mine: tls.crt is not signed by any CA in ca.crt");

        let expired =
            check(&secret_of(&leaf, &ca.cert_pem), now + Duration::days(400)).unwrap_err();
        assert_eq!(expired.reason, "CertificateExpired");
        assert!(expired.message.starts_with("Secret mine: tls.crt expired at"), "{expired}");

        let early = check(&secret_of(&leaf, &ca.cert_pem), now - Duration::days(1)).unwrap_err();
        assert_eq!(early.reason, "CertificateNotYetValid");

        let mut no_key = secret_of(&leaf, &ca.cert_pem);
        no_key.data.as_mut().unwrap().remove(TLS_KEY);
        let err = check(&no_key, now).unwrap_err();
        assert_eq!(
            (err.reason, err.message.as_str()),
            ("SecretInvalid", "Secret mine has no tls.key")
        );

        let mut garbled = secret_of(&leaf, &ca.cert_pem);
        garbled.data.as_mut().unwrap().insert(CA_CERT.into(), ByteString(b"not pem".to_vec()));
        let err = check(&garbled, now).unwrap_err();
        assert_eq!(err.reason, "SecretInvalid");
        assert!(err.message.starts_with("Secret mine ca.crt is not a PEM certificate"), "{err}");
        assert!(!err.message.contains("PRIVATE"), "{err}");
    }
}
