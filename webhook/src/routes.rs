//! The admission endpoints as axum routes: `/validate/<plural>` and `/mutate/<plural>`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::mutate::Kind;
use crate::review::{Mode, Outcome, review};

/// Larger bodies get HTTP 413. kube-apiserver caps objects at about 3 MiB; a review holds the
/// object and the old object.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Every admission route. The response carries its [`Outcome`] as an extension for metrics.
pub fn router() -> Router {
    let mut router = Router::new();
    for (plural, kind) in [
        ("etcdclusters", Kind::EtcdCluster),
        ("etcdbackups", Kind::EtcdBackup),
        ("etcdrestores", Kind::EtcdRestore),
    ] {
        router = router
            .route(
                &format!("/validate/{plural}"),
                post(move |body: Bytes| handle(kind, Mode::Validate, body)),
            )
            .route(
                &format!("/mutate/{plural}"),
                post(move |body: Bytes| handle(kind, Mode::Mutate, body)),
            );
    }
    router.layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

async fn handle(kind: Kind, mode: Mode, body: Bytes) -> Response {
    match review(kind, mode, &body) {
        Ok((answer, outcome)) => {
            if outcome == Outcome::Denied {
                let reason =
                    answer.response.as_ref().map(|r| r.result.message.clone()).unwrap_or_default();
                tracing::info!(?kind, ?mode, %reason, "admission denied");
            }
            let mut response = axum::Json(wire_form(answer)).into_response();
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

/// The review as kube-apiserver writes one: kube-core serialises `patch` (a `[]byte` in Go) as an
/// array of numbers, which Go accepts, but the canonical and four times smaller form is base64.
/// The patch is taken out before the review becomes JSON, so its bytes are encoded once, as a
/// string, instead of as a tree of numbers.
fn wire_form(
    mut answer: kube::core::admission::AdmissionReview<kube::core::DynamicObject>,
) -> serde_json::Value {
    let patch = answer.response.as_mut().and_then(|response| response.patch.take());
    let mut value = serde_json::to_value(answer).unwrap_or_default();
    if let (Some(patch), Some(response)) = (patch, value.get_mut("response")) {
        let encoded = serde_json::to_value(k8s_openapi::ByteString(patch)).unwrap_or_default();
        response["patch"] = encoded;
    }
    value
}
