//! When a certificate must be re-issued: before it expires, when the names it must cover changed,
//! or when it was issued by a CA other than the current one.

use time::OffsetDateTime;

use crate::inspect::{certificates, inspect, is_signed_by};
use crate::{Error, Lifetimes};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RenewalReason {
    /// Past the renewal point of its lifetime (or already expired).
    Expiring { not_after: OffsetDateTime },
    /// It does not cover exactly the names it must.
    NamesChanged { missing: Vec<String>, extra: Vec<String> },
    /// Not signed by the CA that now issues.
    IssuerChanged,
}

impl std::fmt::Display for RenewalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Expiring { not_after } => write!(f, "expires at {not_after}"),
            Self::NamesChanged { missing, extra } => {
                write!(f, "names changed (missing {missing:?}, no longer needed {extra:?})")
            }
            Self::IssuerChanged => write!(f, "issued by another CA"),
        }
    }
}

/// The point in a certificate's life after which it is renewed.
pub fn renewal_time(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    lifetimes: &Lifetimes,
) -> OffsetDateTime {
    let life = not_after - not_before;
    not_before + life * (f64::from(lifetimes.renew_after_permille) / 1000.0)
}

/// Why `cert_pem` must be re-issued now, or `None` when it is fine. `wanted_names` is compared as a
/// set when given; `ca_pem` is the CA that should have signed it, when given.
pub fn needs_renewal(
    cert_pem: &str,
    wanted_names: Option<&[String]>,
    ca_pem: Option<&str>,
    now: OffsetDateTime,
    lifetimes: &Lifetimes,
) -> Result<Option<RenewalReason>, Error> {
    let info = inspect(cert_pem, "certificate")?;
    if now >= renewal_time(info.not_before, info.not_after, lifetimes) {
        return Ok(Some(RenewalReason::Expiring { not_after: info.not_after }));
    }
    if let Some(ca_pem) = ca_pem {
        let cert = certificates(cert_pem, "certificate")?.remove(0);
        let ca = certificates(ca_pem, "CA certificate")?.remove(0);
        if !is_signed_by(&cert, &ca) {
            return Ok(Some(RenewalReason::IssuerChanged));
        }
    }
    if let Some(wanted) = wanted_names {
        let mut wanted: Vec<String> = wanted.to_vec();
        wanted.sort();
        wanted.dedup();
        let missing: Vec<String> =
            wanted.iter().filter(|n| !info.subject_alt_names.contains(n)).cloned().collect();
        let extra: Vec<String> =
            info.subject_alt_names.iter().filter(|n| !wanted.contains(n)).cloned().collect();
        if !missing.is_empty() || !extra.is_empty() {
            return Ok(Some(RenewalReason::NamesChanged { missing, extra }));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use time::Duration;

    use super::*;
    use crate::issue::{LeafSpec, Usage, issue_ca, issue_leaf};

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    fn leaf(names: &[String]) -> (crate::CertKeyPair, crate::CertKeyPair) {
        let lifetimes = Lifetimes::default();
        let ca = issue_ca("test-ca", now(), &lifetimes).unwrap();
        let spec = LeafSpec { common_name: "leaf", subject_alt_names: names, usage: Usage::Server };
        (ca.clone(), issue_leaf(&ca, &spec, now(), &lifetimes).unwrap())
    }

    #[test]
    fn fresh_certificate_needs_nothing() {
        let names = vec!["a.example".to_owned(), "127.0.0.1".to_owned()];
        let (ca, leaf) = leaf(&names);
        let got = needs_renewal(
            &leaf.cert_pem,
            Some(&names),
            Some(&ca.cert_pem),
            now(),
            &Lifetimes::default(),
        );
        assert_eq!(got.unwrap(), None);
    }

    #[test]
    fn renewal_starts_at_two_thirds_of_life() {
        let (_, leaf) = leaf(&["a".to_owned()]);
        let lifetimes = Lifetimes::default();
        let info = inspect(&leaf.cert_pem, "leaf").unwrap();
        let point = renewal_time(info.not_before, info.not_after, &lifetimes);
        let just_before = point - Duration::seconds(1);
        assert_eq!(
            needs_renewal(&leaf.cert_pem, None, None, just_before, &lifetimes).unwrap(),
            None
        );
        assert!(matches!(
            needs_renewal(&leaf.cert_pem, None, None, point, &lifetimes).unwrap(),
            Some(RenewalReason::Expiring { .. })
        ));
        // About four months before expiry with a one-year leaf.
        let margin = info.not_after - point;
        assert!(margin > Duration::days(115) && margin < Duration::days(130), "{margin}");
    }

    #[test]
    fn changed_names_are_reported_both_ways() {
        let (_, leaf) = leaf(&["a".to_owned(), "b".to_owned()]);
        let wanted = vec!["b".to_owned(), "c".to_owned()];
        let got = needs_renewal(&leaf.cert_pem, Some(&wanted), None, now(), &Lifetimes::default())
            .unwrap();
        assert_eq!(
            got,
            Some(RenewalReason::NamesChanged {
                missing: vec!["c".into()],
                extra: vec!["a".into()]
            })
        );
    }

    #[test]
    fn another_ca_means_reissue() {
        let (_, leaf) = leaf(&["a".to_owned()]);
        let other = issue_ca("other", now(), &Lifetimes::default()).unwrap();
        let got = needs_renewal(
            &leaf.cert_pem,
            None,
            Some(&other.cert_pem),
            now(),
            &Lifetimes::default(),
        );
        assert_eq!(got.unwrap(), Some(RenewalReason::IssuerChanged));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(needs_renewal("not a cert", None, None, now(), &Lifetimes::default()).is_err());
    }
}
