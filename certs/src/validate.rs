//! Checks of user-provided TLS Secrets (autoTLS off): parseable, chained to the CA they carry,
//! inside their validity window. Messages are written for a status condition.

use k8s_openapi::api::core::v1::Secret;
use time::OffsetDateTime;

use crate::Error;
use crate::inspect::{certificates, inspect, is_signed_by};
use crate::secret::decode_tls_secret;

/// Why a provided Secret cannot be used, or `Ok(())`.
pub fn validate_tls_secret(secret: &Secret, now: OffsetDateTime) -> Result<(), String> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let (pair, ca_bundle) = decode_tls_secret(secret).map_err(|err| err.to_string())?;
    let describe = |err: Error| format!("Secret {name}: {err}");
    let info = inspect(&pair.cert_pem, "tls.crt").map_err(describe)?;
    if now < info.not_before {
        return Err(format!("Secret {name}: tls.crt is not valid before {}", info.not_before));
    }
    if now >= info.not_after {
        return Err(format!("Secret {name}: tls.crt expired at {}", info.not_after));
    }
    let leaf = certificates(&pair.cert_pem, "tls.crt").map_err(describe)?.remove(0);
    let cas = certificates(&ca_bundle, "ca.crt").map_err(describe)?;
    if !cas.iter().any(|ca| is_signed_by(&leaf, ca)) {
        return Err(format!("Secret {name}: tls.crt is not signed by any CA in ca.crt"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use time::Duration;

    use super::*;
    use crate::Lifetimes;
    use crate::issue::{LeafSpec, Usage, issue_ca, issue_leaf};
    use crate::secret::tls_secret_data;

    fn secret_of(pair: &crate::CertKeyPair, ca_pem: &str) -> Secret {
        Secret {
            metadata: ObjectMeta { name: Some("mine".into()), ..Default::default() },
            data: Some(tls_secret_data(pair, ca_pem)),
            ..Default::default()
        }
    }

    #[test]
    fn accepts_a_good_secret_and_names_each_fault() {
        let now = OffsetDateTime::now_utc();
        let lifetimes = Lifetimes::default();
        let ca = issue_ca("ca", now, &lifetimes).unwrap();
        let other = issue_ca("other", now, &lifetimes).unwrap();
        let names = ["x".to_owned()];
        let leaf = issue_leaf(
            &ca,
            &LeafSpec { common_name: "x", subject_alt_names: &names, usage: Usage::Server },
            now,
            &lifetimes,
        )
        .unwrap();
        assert_eq!(validate_tls_secret(&secret_of(&leaf, &ca.cert_pem), now), Ok(()));
        assert_eq!(
            validate_tls_secret(&secret_of(&leaf, &other.cert_pem), now).unwrap_err(),
            "Secret mine: tls.crt is not signed by any CA in ca.crt"
        );
        let expired =
            validate_tls_secret(&secret_of(&leaf, &ca.cert_pem), now + Duration::days(400))
                .unwrap_err();
        assert!(expired.starts_with("Secret mine: tls.crt expired at"), "{expired}");
    }
}
