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

/// Every admission route. Validation also asks `authorizer` whether the author of a request may
/// read the Secrets it newly names ([`secrets`]). The response carries its [`Outcome`] as an
/// extension for metrics.
pub fn router(authorizer: Arc<dyn Authorizer>) -> Router {
    let mut router = Router::new();
    for (plural, kind) in [
        ("etcdclusters", Kind::EtcdCluster),
        ("etcdbackups", Kind::EtcdBackup),
        ("etcdrestores", Kind::EtcdRestore),
    ] {
        let authorizer = authorizer.clone();
        router = router
            .route(
                &format!("/validate/{plural}"),
                post(move |body: Bytes| handle(kind, Mode::Validate, body, Some(authorizer))),
            )
            .route(
                &format!("/mutate/{plural}"),
                post(move |body: Bytes| handle(kind, Mode::Mutate, body, None)),
            );
    }
    router.layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

async fn handle(
    kind: Kind,
    mode: Mode,
    body: Bytes,
    authorizer: Option<Arc<dyn Authorizer>>,
) -> Response {
    let reviewed = match (review(kind, mode, &body), authorizer) {
        (Ok((answer, Outcome::Allowed)), Some(authorizer)) => {
            Ok(authorize(kind, &body, answer, authorizer.as_ref()).await)
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
