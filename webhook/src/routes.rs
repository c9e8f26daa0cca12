//! The admission endpoints as axum routes: `/validate/<plural>` and `/mutate/<plural>`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::mutate::Kind;
use crate::policy::Policy;
use crate::review::{Mode, Outcome, review};

/// Larger bodies get HTTP 413. A review holds the object and the old object, each at most what
/// etcd stores behind kube-apiserver (1.5 MiB, its default `--max-request-bytes`), in an
/// envelope of a few KiB: nothing larger is a review.
pub const MAX_BODY_BYTES: usize = 2 * 1536 * 1024 + 64 * 1024;

/// Every admission route; validation also applies the administrator's `policy`. The response carries its
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
        (Ok((answer, Outcome::Allowed)), Some(policy)) => {
            Ok(crate::policy::admit(kind, &body, answer, &policy).await)
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
