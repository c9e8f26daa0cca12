//! Prometheus metrics: requests by path and outcome, with a latency histogram, and when the
//! certificates the server serves with expire.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use etcd_webhook::review::Outcome;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub path: String,
    /// allowed / patched / denied / bad_request for admission, else the HTTP status class.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    /// ca or serving.
    certificate: String,
}

/// The registry and the HTTP metrics. Other components register theirs in `registry`.
pub struct Metrics {
    pub registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram>,
    certificate_expiry: Family<CertificateLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("etcd_operator");
        let requests = Family::<RequestLabels, Counter>::default();
        // 50 µs to ~3 s: admission answers in microseconds, a slow apiserver shows in the tail.
        let latency = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.00005, 3.0, 11,
            ))
        });
        registry.register("http_requests", "HTTP requests by path and result", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by path and result",
            latency.clone(),
        );
        let certificate_expiry = Family::<CertificateLabels, Gauge>::default();
        registry.register(
            "webhook_certificate_expiry_timestamp_seconds",
            "When the certificates this server serves with expire (the leader renews them before)",
            certificate_expiry.clone(),
        );
        Self { registry: Mutex::new(registry), requests, latency, certificate_expiry }
    }
}

impl Metrics {
    /// Records when the served `certificate` (PEM) expires.
    pub fn served_certificate(&self, certificate: &str, pem: &str) {
        if let Ok(info) = etcd_certs::inspect::inspect(pem, certificate) {
            let labels = CertificateLabels { certificate: certificate.to_owned() };
            self.certificate_expiry.get_or_create(&labels).set(info.not_after.unix_timestamp());
        }
    }
}

/// Middleware: counts and times every request. Paths no route matched share one label, so that
/// a scanner cannot grow the label set without bound.
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let path = match request.extensions().get::<axum::extract::MatchedPath>() {
        Some(matched) => matched.as_str().to_owned(),
        None => "other".to_owned(),
    };
    let start = Instant::now();
    let response = next.run(request).await;
    let result = match response.extensions().get::<Outcome>() {
        Some(outcome) => outcome.as_str().to_owned(),
        None => format!("{}xx", response.status().as_u16() / 100),
    };
    let labels = RequestLabels { path, result };
    metrics.requests.get_or_create(&labels).inc();
    metrics.latency.get_or_create(&labels).observe(start.elapsed().as_secs_f64());
    response
}

pub async fn render(State(metrics): State<Arc<Metrics>>) -> Response {
    let mut text = String::new();
    let registry = metrics.registry.lock().unwrap_or_else(|p| p.into_inner());
    match prometheus_client::encoding::text::encode(&mut text, &registry) {
        Ok(()) => {
            ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
                .into_response()
        }
        Err(err) => {
            (axum::http::StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response()
        }
    }
}
