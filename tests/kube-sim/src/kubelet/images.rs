//! Images (`pkg/kubelet/images/image_manager.go`): what each node has pulled. The first use of an
//! image on a node pulls it, which takes time (`--image-pull-ms`); `IfNotPresent` (the default
//! for a tagged image) uses what is there, `Always` asks the registry again (a digest check:
//! quick once the layers are present). An image no registry has fails with `ErrImagePull`, and
//! the container waits in `ImagePullBackOff` (10 s doubling to 5 min) before the next try.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// What an image holds: its files (mounted at /usr/local/bin) and its entrypoint and command.
#[derive(Clone, Debug)]
pub struct Image {
    pub dir: PathBuf,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

/// The images the registries hold.
#[derive(Clone, Debug, Default)]
pub struct Images {
    /// Full references (`registry/repo:tag`) → image.
    pub exact: HashMap<String, Image>,
    /// etcd versions (`3.4.23`) → image, for `<any registry>/etcd:v3.4.23` or `:3.4.23`.
    pub etcd: HashMap<String, Image>,
}

/// `etcd-operator` → `docker.io/library/etcd-operator:latest`, as the container runtime reads
/// a reference.
pub fn normalize(reference: &str) -> String {
    let (name, tag) = match reference.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n.to_owned(), t.to_owned()),
        _ => (reference.to_owned(), "latest".to_owned()),
    };
    let first = name.split('/').next().unwrap_or_default();
    let has_registry =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let name = if has_registry {
        name
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    };
    format!("{name}:{tag}")
}

impl Images {
    pub fn find(&self, reference: &str) -> Option<&Image> {
        let full = normalize(reference);
        if let Some(image) = self.exact.get(&full) {
            return Some(image);
        }
        let (name, tag) = full.rsplit_once(':')?;
        if name.rsplit('/').next() == Some("etcd") {
            return self.etcd.get(tag.trim_start_matches('v'));
        }
        None
    }
}

/// Why a container waits for its image.
pub struct PullFailed {
    pub reason: &'static str,
    pub message: String,
}

/// The images each node holds, and how long a pull takes.
pub struct Puller {
    pub images: Images,
    pub pull_time: Duration,
    pulled: Mutex<HashSet<(String, String)>>,
}

impl Puller {
    pub fn new(images: Images, pull_time: Duration) -> Self {
        Self { images, pull_time, pulled: Mutex::default() }
    }

    /// The image of `reference` on `node`, pulled first if the node lacks it (or the policy is
    /// `Always`).
    pub async fn ensure(
        &self,
        node: &str,
        reference: &str,
        policy: Option<&str>,
    ) -> Result<Image, PullFailed> {
        let full = normalize(reference);
        let policy =
            policy.unwrap_or(if full.ends_with(":latest") { "Always" } else { "IfNotPresent" });
        let key = (node.to_owned(), full.clone());
        let present = self.pulled.lock().unwrap_or_else(|p| p.into_inner()).contains(&key);
        if policy == "Never" && !present {
            return Err(PullFailed {
                reason: "ErrImageNeverPull",
                message: format!(
                    "Container image \"{full}\" is not present with pull policy of Never"
                ),
            });
        }
        let Some(image) = self.images.find(reference).cloned() else {
            // The registry answers at once that it has no such image.
            tokio::time::sleep(Duration::from_millis(300)).await;
            return Err(PullFailed {
                reason: "ErrImagePull",
                message: format!("failed to pull and unpack image \"{full}\": not found"),
            });
        };
        if !present {
            tokio::time::sleep(self.pull_time).await;
            self.pulled.lock().unwrap_or_else(|p| p.into_inner()).insert(key);
        } else if policy == "Always" {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(image)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn references_normalize_as_the_runtime_reads_them() {
        assert_eq!(super::normalize("etcd-operator"), "docker.io/library/etcd-operator:latest");
        assert_eq!(
            super::normalize("ghcr.io/etcd-operator/etcd-operator:0.1.0"),
            "ghcr.io/etcd-operator/etcd-operator:0.1.0"
        );
        assert_eq!(super::normalize("quay.io/coreos/etcd:v3.5.1"), "quay.io/coreos/etcd:v3.5.1");
        assert_eq!(super::normalize("localhost:5000/x"), "localhost:5000/x:latest");
    }
}
