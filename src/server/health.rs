//! Probes. `/healthz` says the process serves; `/readyz` says it should get traffic, and names
//! what is wrong when it should not (a failed certificate rotation, say).

use std::sync::{Arc, RwLock};

use axum::extract::State;
use axum::http::StatusCode;

/// Problems that keep the service out of rotation, by component. Empty means ready.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    problems: Arc<RwLock<Vec<(String, String)>>>,
}

impl Readiness {
    /// Records (or clears, with `None`) the problem of `component`.
    pub fn set(&self, component: &str, problem: Option<String>) {
        let mut problems = self.problems.write().unwrap_or_else(|p| p.into_inner());
        problems.retain(|(c, _)| c != component);
        if let Some(problem) = problem {
            problems.push((component.to_owned(), problem));
        }
    }

    /// `None` when ready, otherwise every problem on one line.
    pub fn problems(&self) -> Option<String> {
        let problems = self.problems.read().unwrap_or_else(|p| p.into_inner());
        (!problems.is_empty()).then(|| {
            problems.iter().map(|(c, p)| format!("{c}: {p}")).collect::<Vec<_>>().join("; ")
        })
    }
}

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz(State(readiness): State<Readiness>) -> (StatusCode, String) {
    match readiness.problems() {
        None => (StatusCode::OK, "ok".to_owned()),
        Some(problems) => (StatusCode::SERVICE_UNAVAILABLE, problems),
    }
}
