//! etcd versions as the API accepts them: `3.MINOR.PATCH`, with a supported minor.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// etcd minor versions (of major 3) that the operator can run and upgrade between.
pub const SUPPORTED_MINORS: std::ops::RangeInclusive<u32> = 4..=6;

/// A parsed etcd version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EtcdVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl EtcdVersion {
    /// The oldest release of the previous minor from which etcd's upgrade guide allows moving to
    /// minor `minor`, where it names one: 3.5 → 3.6 needs 3.5.26 or later ("Upgrade etcd from
    /// v3.5 to v3.6", etcd.io: 3.5.24 to 3.5.26 fix upgrade blockers; the page once said 3.5.20,
    /// so this is the one place to follow it).
    pub fn minimum_before_minor(minor: u32) -> Option<EtcdVersion> {
        match minor {
            6 => Some(EtcdVersion { major: 3, minor: 5, patch: 26 }),
            _ => None,
        }
    }

    /// Strips a leading `v` and surrounding whitespace, as the mutating webhook normalises.
    pub fn normalise(text: &str) -> &str {
        let trimmed = text.trim();
        trimmed.strip_prefix('v').unwrap_or(trimmed)
    }

    /// Whether this version is one the operator supports.
    pub fn is_supported(&self) -> bool {
        self.major == 3 && SUPPORTED_MINORS.contains(&self.minor)
    }
}

impl FromStr for EtcdVersion {
    type Err = Error;

    /// Parses exactly `MAJOR.MINOR.PATCH` (no `v`, no pre-release suffix).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || Error::InvalidVersion(text.to_owned());
        let mut parts = text.split('.');
        let mut next = || -> Result<u32, Error> {
            let part = parts.next().ok_or_else(invalid)?;
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            part.parse().map_err(|_| invalid())
        };
        let version = EtcdVersion { major: next()?, minor: next()?, patch: next()? };
        if parts.next().is_some() {
            return Err(invalid());
        }
        Ok(version)
    }
}

impl fmt::Display for EtcdVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let v: EtcdVersion = "3.5.21".parse().unwrap();
        assert_eq!(v, EtcdVersion { major: 3, minor: 5, patch: 21 });
        assert_eq!(v.to_string(), "3.5.21");
        assert!(v.is_supported());
    }

    #[test]
    fn refuses_malformed() {
        for bad in [
            "",
            "3",
            "3.5",
            "3.5.",
            "3.5.x",
            "v3.5.1",
            "3.5.1.2",
            "3.5.1-rc.0",
            " 3.5.1",
            "3..1",
            "+3.5.1",
        ] {
            assert!(bad.parse::<EtcdVersion>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn supported_minors_only() {
        assert!(!"3.3.27".parse::<EtcdVersion>().unwrap().is_supported());
        assert!(!"3.7.0".parse::<EtcdVersion>().unwrap().is_supported());
        assert!(!"4.4.0".parse::<EtcdVersion>().unwrap().is_supported());
        assert!("3.4.23".parse::<EtcdVersion>().unwrap().is_supported());
    }

    #[test]
    fn normalises() {
        assert_eq!(EtcdVersion::normalise(" v3.5.21 "), "3.5.21");
        assert_eq!(EtcdVersion::normalise("3.5.21"), "3.5.21");
    }
}
