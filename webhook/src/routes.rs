//! The admission endpoints as axum routes: `/validate/<plural>` and `/mutate/<plural>`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::mutate::Kind;
use crate::review::{Mode, Outcome, review};
use crate::secrets::{self, Authorizer};

/// Larger bodies get HTTP 413. A review holds the object and the old object, each at most what
/// etcd stores behind kube-apiserver (1.5 MiB, its default `--max-request-bytes`), in an
/// envelope of a few KiB: nothing larger is a review.
pub const MAX_BODY_BYTES: usize = 2 * 1536 * 1024 + 64 * 1024;

/// What the operator's administrator decides beyond the API's own rules.
pub struct Policy {
    /// Whether a request's author may read the Secrets it names ([`secrets`]).
    pub authorizer: Arc<dyn Authorizer>,
    /// The image repositories members may run ([`crate::images`]).
    pub repositories: Vec<String>,
}

/// Every admission route; validation also applies `policy`. The response carries its
/// [`Outcome`] as an extension for metrics.
pub fn router(policy: Policy) -> Router {
    let policy = Arc::new(policy);
    let mut router = Router::new();
    for (plural, kind) in [
        ("etcdclusters", Kind::EtcdCluster),
        ("etcdbackups", Kind::EtcdBackup),
        ("etcdrestores", Kind::EtcdRestore),
    ] {
        let policy = policy.clone();
        router = router
            .route(
                &format!("/validate/{plural}"),
                post(move |body: Bytes| handle(kind, Mode::Validate, body, Some(policy))),
            )
            .route(
                &format!("/mutate/{plural}"),
                post(move |body: Bytes| handle(kind, Mode::Mutate, body, None)),
            );
    }
    router.layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

async fn handle(kind: Kind, mode: Mode, body: Bytes, policy: Option<Arc<Policy>>) -> Response {
    let reviewed = match (review(kind, mode, &body), policy) {
        (Ok((mut answer, Outcome::Allowed)), Some(policy)) => {
            match crate::images::denial(kind, &body, &policy.repositories) {
                Some(denial) => {
                    answer.allowed = false;
                    answer.message = denial;
                    Ok((answer, Outcome::Denied))
                }
                None => Ok(authorize(kind, &body, answer, policy.authorizer.as_ref()).await),
            }
        }
        (other, _) => other,
    };
    match reviewed {
        Ok((answer, outcome)) => {
            if outcome == Outcome::Denied {
                tracing::info!(?kind, ?mode, reason = %answer.message, "admission denied");
            }
            let json = [(header::CONTENT_TYPE, "application/json")];
            let mut response = (json, answer.to_json()).into_response();
            response.extensions_mut().insert(outcome);
            response
        }
        Err(err) => {
            tracing::warn!(?kind, ?mode, %err, "malformed admission request");
            let mut response = (StatusCode::BAD_REQUEST, err.to_string()).into_response();
            response.extensions_mut().insert(Outcome::BadRequest);
            response
        }
    }
}

/// An allowed request that names Secrets its author may not read is denied, naming each; one
/// whose check cannot be made is denied too (the request can be made again).
async fn authorize(
    kind: Kind,
    body: &[u8],
    mut answer: crate::review::Answer,
    authorizer: &dyn Authorizer,
) -> (crate::review::Answer, Outcome) {
    let Some(check) = secrets::check(kind, body) else {
        return (answer, Outcome::Allowed);
    };
    let who = &check.requester.username;
    let denial = match authorizer.unreadable(&check).await {
        Ok(unreadable) if unreadable.is_empty() => return (answer, Outcome::Allowed),
        Ok(unreadable) => unreadable
            .iter()
            .map(|u| {
                format!(
                    "{}: {who} may not read Secret {} in {}; a spec may name only Secrets its \
                     author can read",
                    u.field, u.name, check.namespace
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        Err(why) => format!("cannot check which Secrets {who} may read: {why}"),
    };
    answer.allowed = false;
    answer.message = denial;
    (answer, Outcome::Denied)
}
