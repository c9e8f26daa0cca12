//! The one HTTPS service: admission routes, `/metrics`, `/healthz`, `/readyz`, served over rustls
//! with a certificate that can be swapped in memory.

pub mod health;
pub mod metrics;
pub mod tls_listener;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

pub use health::Readiness;
pub use metrics::Metrics;
pub use tls_listener::{Error, serve};

/// Every route of the service. `metrics` counts and times each request by path and outcome.
pub fn router(metrics: Arc<Metrics>, readiness: Readiness) -> Router {
    Router::new()
        .merge(etcd_webhook::router())
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz).with_state(readiness))
        .route("/metrics", get(metrics::render).with_state(metrics.clone()))
        .layer(axum::middleware::from_fn_with_state(metrics, metrics::track))
}
