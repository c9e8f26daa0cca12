//! The node agent's view of the API server: plain JSON over a `kube::Client` built from a
//! kubeconfig, addressed by REST paths as kubectl's `--raw` is. Objects stay JSON, as the
//! kubelet's own code treats most of them through generated types we have no need for here.

use http::{Method, Request};
use serde_json::Value;

#[derive(Clone)]
pub struct Api {
    client: kube::Client,
}

/// An API call that failed: the HTTP code (0 when there was no answer) and why.
#[derive(Debug)]
pub struct Failed {
    pub code: u16,
    pub message: String,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

fn failed(err: kube::Error) -> Failed {
    match err {
        kube::Error::Api(status) => Failed { code: status.code, message: status.message },
        other => Failed { code: 0, message: other.to_string() },
    }
}

impl Api {
    pub async fn from_kubeconfig(path: &std::path::Path) -> Result<Self, String> {
        let kubeconfig = kube::config::Kubeconfig::read_from(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
        Ok(Self { client })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Option<&Value>,
    ) -> Result<Value, Failed> {
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap_or_default()).unwrap_or_default();
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type)
            .body(bytes)
            .map_err(|e| Failed { code: 0, message: e.to_string() })?;
        self.client.request::<Value>(request).await.map_err(failed)
    }

    /// The object at `path`, or `None` if there is none.
    pub async fn get(&self, path: &str) -> Result<Option<Value>, Failed> {
        match self.call(Method::GET, path, "application/json", None).await {
            Ok(v) => Ok(Some(v)),
            Err(Failed { code: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The items of the list at `path`.
    pub async fn list(&self, path: &str) -> Result<Vec<Value>, Failed> {
        let list = self.call(Method::GET, path, "application/json", None).await?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    pub async fn create(&self, path: &str, object: &Value) -> Result<Value, Failed> {
        self.call(Method::POST, path, "application/json", Some(object)).await
    }

    /// A JSON merge patch (RFC 7386): arrays are replaced whole.
    pub async fn merge(&self, path: &str, patch: &Value) -> Result<Value, Failed> {
        self.call(Method::PATCH, path, "application/merge-patch+json", Some(patch)).await
    }

    /// A strategic merge patch: lists with a merge key (conditions, containerStatuses) are
    /// merged by it, as the kubelet's status manager patches.
    pub async fn strategic(&self, path: &str, patch: &Value) -> Result<Value, Failed> {
        self.call(Method::PATCH, path, "application/strategic-merge-patch+json", Some(patch)).await
    }

    /// Deletes with `options` (a DeleteOptions body); a missing object is not an error.
    pub async fn delete(&self, path: &str, options: &Value) -> Result<(), Failed> {
        match self.call(Method::DELETE, path, "application/json", Some(options)).await {
            Ok(_) | Err(Failed { code: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// `metadata.namespace` and `metadata.name` of an object.
pub fn namespace_of(object: &Value) -> String {
    object["metadata"]["namespace"].as_str().unwrap_or_default().to_owned()
}

pub fn name_of(object: &Value) -> String {
    object["metadata"]["name"].as_str().unwrap_or_default().to_owned()
}

/// Now, as the API's `Time` fields are written (RFC 3339, whole seconds).
pub fn now() -> String {
    timestamp(time::OffsetDateTime::now_utc(), false)
}

/// Now, as `MicroTime` fields (a Lease's renewTime) are written: six fractional digits, which
/// the API server's parser requires.
pub fn now_micro() -> String {
    timestamp(time::OffsetDateTime::now_utc(), true)
}

fn timestamp(t: time::OffsetDateTime, micro: bool) -> String {
    let (date, clock) = (t.date(), t.time());
    let mut text = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        date.year(),
        u8::from(date.month()),
        date.day(),
        clock.hour(),
        clock.minute(),
        clock.second()
    );
    if micro {
        text.push_str(&format!(".{:06}", clock.microsecond()));
    }
    text.push('Z');
    text
}
