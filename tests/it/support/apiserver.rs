//! A scripted kube-apiserver behind `kube::Client`: a tower-test mock service that expects the
//! exact requests a piece of code makes, in order, answers each with the given status and body,
//! and keeps what was sent so a test can assert on bodies (server-side apply, status patches).
//!
//! Requests go through kube's real request path (URL building, serialisation, error mapping);
//! only the HTTP exchange is scripted.

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::Value;
use tokio::task::JoinHandle;

/// One expected request and the answer to give it.
pub struct Exchange {
    pub method: Method,
    /// The request path, compared without the query string.
    pub path: String,
    pub status: StatusCode,
    pub response: Value,
}

impl Exchange {
    pub fn new(method: Method, path: impl Into<String>, response: Value) -> Self {
        Self { method, path: path.into(), status: StatusCode::OK, response }
    }

    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
}

/// What the code under test sent.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub body: Value,
}

/// A `kube::Status` body, as the API server sends with errors such as 404 or 409.
pub fn status_body(code: u16, reason: &str, message: &str) -> Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Status", "status": "Failure",
        "code": code, "reason": reason, "message": message, "metadata": {}
    })
}

/// A GET of `path` answered 503, as an API server that is restarting or overloaded answers.
pub fn unavailable(path: String) -> Exchange {
    Exchange::new(
        http::Method::GET,
        path,
        status_body(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        ),
    )
    .status(http::StatusCode::SERVICE_UNAVAILABLE)
}

/// Serves `script` in order; the handle resolves to every request received. A request that does
/// not match the next expected one fails the test with both printed.
pub fn serve(script: Vec<Exchange>) -> (kube::Client, JoinHandle<Vec<Recorded>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        for expected in script {
            let Some((request, respond)) = handle.next_request().await else {
                panic!(
                    "expected {} {} but the client sent nothing more",
                    expected.method, expected.path
                );
            };
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.expect("request body");
            let recorded = Recorded {
                method: parts.method.clone(),
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().unwrap_or_default().to_owned(),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                body: if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
                },
            };
            assert_eq!(
                (&recorded.method, recorded.path.as_str()),
                (&expected.method, expected.path.as_str()),
                "unexpected request (#{}); body: {}",
                seen.len(),
                recorded.body
            );
            let response = Response::builder()
                .status(expected.status)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Body::from(serde_json::to_vec(&expected.response).expect("json")))
                .expect("response");
            respond.send_response(response);
            seen.push(recorded);
        }
        seen
    });
    (client, task)
}
