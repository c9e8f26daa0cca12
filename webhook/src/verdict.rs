//! The outcome of validating one object: every violated rule (with its field path) and warnings.

/// Violations and warnings, collected in full so one denial names every problem at once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub violations: Vec<String>,
    pub warnings: Vec<String>,
}

impl Verdict {
    /// Records that the rule at `path` was broken: `spec.size: must be one of …; got 4`.
    pub fn deny(&mut self, path: &str, message: impl std::fmt::Display) {
        self.violations.push(format!("{path}: {message}"));
    }

    pub fn warn(&mut self, path: &str, message: impl std::fmt::Display) {
        self.warnings.push(format!("{path}: {message}"));
    }

    pub fn is_allowed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The denial message: every violation, separated so `kubectl` shows them on one line each.
    pub fn message(&self) -> String {
        self.violations.join("; ")
    }

    pub fn merge(&mut self, other: Verdict) {
        self.violations.extend(other.violations);
        self.warnings.extend(other.warnings);
    }
}
