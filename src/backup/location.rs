//! Where a snapshot is: an object store and a path in it, named by a URL.
//!
//! `s3://bucket/key`, `gs://bucket/key`, `az://container/key`, `file:///dir/key`, or a plain path.
//! Credentials and endpoints come from the backend's usual environment variables (`AWS_*`,
//! `GOOGLE_*`, `AZURE_*`) and, for the controllers, from an EtcdBackup's destination and
//! credentials Secret, which take precedence.

use std::collections::BTreeMap;
use std::sync::Arc;

use etcd_crds::BackupDestination;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{BackoffConfig, ObjectStore, ObjectStoreScheme, RetryConfig};

use super::{Error, MANIFEST_SUFFIX};

/// One object (or a prefix of objects) in a store.
#[derive(Clone)]
pub struct Location {
    pub store: Arc<dyn ObjectStore>,
    pub path: Path,
    /// The URL a user would write for it; what status and errors show.
    pub url: String,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl Location {
    /// Parses a location with options from the environment; `options` override them.
    pub fn parse(location: &str, options: &BTreeMap<String, String>) -> Result<Self, Error> {
        let bad = |reason: String| Error::BadLocation { location: location.to_owned(), reason };
        let url = if location.contains("://") {
            url::Url::parse(location).map_err(|e| bad(e.to_string()))?
        } else {
            let absolute = std::path::absolute(location).map_err(|e| bad(e.to_string()))?;
            url::Url::from_file_path(&absolute)
                .map_err(|()| bad("not an absolute file path".to_owned()))?
        };
        let mut all = environment_options();
        all.extend(options.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())));
        let (scheme, path) = ObjectStoreScheme::parse(&url).map_err(|e| bad(e.to_string()))?;
        let store = open_store(&scheme, &url, &all).map_err(|e| bad(e.to_string()))?;
        Ok(Self { store, path, url: url.to_string() })
    }

    /// The prefix an EtcdBackup destination names, with the credentials Secret's entries (keyed
    /// as the backend's environment variables) as options.
    pub fn for_destination(
        destination: &BackupDestination,
        credentials: &BTreeMap<String, String>,
    ) -> Result<Self, Error> {
        let mut options: BTreeMap<String, String> =
            credentials.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect();
        let url = match (&destination.s3, &destination.gcs, &destination.azure, &destination.volume)
        {
            (Some(s3), None, None, None) => {
                if let Some(endpoint) = &s3.endpoint {
                    options.insert("aws_endpoint".into(), endpoint.clone());
                    options.insert(
                        "aws_allow_http".into(),
                        endpoint.starts_with("http://").to_string(),
                    );
                    options.insert(
                        "aws_virtual_hosted_style_request".into(),
                        (!s3.force_path_style).to_string(),
                    );
                }
                let region = s3.region.clone().unwrap_or_else(|| "us-east-1".to_owned());
                options.insert("aws_region".into(), region);
                join_url(&format!("s3://{}", s3.bucket), &s3.prefix)
            }
            (None, Some(gcs), None, None) => join_url(&format!("gs://{}", gcs.bucket), &gcs.prefix),
            (None, None, Some(azure), None) => {
                options.insert("azure_storage_account_name".into(), azure.storage_account.clone());
                join_url(&format!("az://{}", azure.container), &azure.prefix)
            }
            (None, None, None, Some(volume)) => volume.path.clone(),
            _ => {
                return Err(Error::BadLocation {
                    location: format!("{:?}", destination.backends()),
                    reason: "a destination needs exactly one of s3, gcs, azure, volume".to_owned(),
                });
            }
        };
        Self::parse(&url, &options)
    }

    /// An object under this prefix.
    pub fn child(&self, name: &str) -> Self {
        let path = if self.path.as_ref().is_empty() {
            Path::from(name)
        } else {
            Path::from(format!("{}/{name}", self.path))
        };
        Self { store: self.store.clone(), path, url: join_url(&self.url, name) }
    }

    /// The manifest object of the snapshot at this location.
    pub fn manifest(&self) -> Self {
        Self {
            store: self.store.clone(),
            path: Path::from(format!("{}{MANIFEST_SUFFIX}", self.path)),
            url: format!("{}{MANIFEST_SUFFIX}", self.url),
        }
    }
}

/// Requests are retried a few times within [`RETRY_TIMEOUT`]; a backup that still fails is retried
/// as a whole by the controller with its own backoff, rather than holding a snapshot stream open
/// for the three minutes object_store would wait by default.
fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: RETRY_TIMEOUT,
    }
}

const RETRY_TIMEOUT: Duration = Duration::from_secs(30);

/// The store for a URL's scheme, configured from `options` (keys a backend does not know are
/// ignored, as `object_store::parse_url_opts` does).
fn open_store(
    scheme: &ObjectStoreScheme,
    url: &url::Url,
    options: &BTreeMap<String, String>,
) -> Result<Arc<dyn ObjectStore>, object_store::Error> {
    fn configure<B, K: std::str::FromStr>(
        builder: B,
        options: &BTreeMap<String, String>,
        set: impl Fn(B, K, &str) -> B,
    ) -> B {
        options.iter().fold(builder, |builder, (key, value)| match key.parse() {
            Ok(key) => set(builder, key, value),
            Err(_) => builder,
        })
    }
    let url = url.as_str();
    Ok(match scheme {
        // A backup is reported once its object and manifest are stored; S3 and the like answer
        // only when both are durable, and a local volume must be as good: without fsync they sat
        // in the page cache, and a node that lost power then lost the backup the status named.
        ObjectStoreScheme::Local => Arc::new(LocalFileSystem::new().with_fsync(true)),
        ObjectStoreScheme::AmazonS3 => {
            let builder = AmazonS3Builder::new().with_url(url).with_retry(retry());
            Arc::new(configure(builder, options, |b, k, v| b.with_config(k, v)).build()?)
        }
        ObjectStoreScheme::GoogleCloudStorage => {
            let builder = GoogleCloudStorageBuilder::new().with_url(url).with_retry(retry());
            Arc::new(configure(builder, options, |b, k, v| b.with_config(k, v)).build()?)
        }
        ObjectStoreScheme::MicrosoftAzure => {
            let builder = MicrosoftAzureBuilder::new().with_url(url).with_retry(retry());
            Arc::new(configure(builder, options, |b, k, v| b.with_config(k, v)).build()?)
        }
        other => {
            return Err(object_store::Error::NotSupported {
                source: format!("{other:?} is not a backup destination").into(),
            });
        }
    })
}

fn join_url(base: &str, name: &str) -> String {
    let name = name.trim_matches('/');
    if name.is_empty() {
        return base.to_owned();
    }
    if base.ends_with('/') { format!("{base}{name}") } else { format!("{base}/{name}") }
}

/// The object-store settings of the environment, as `parse_url_opts` keys.
fn environment_options() -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(key, _)| ["AWS_", "GOOGLE_", "AZURE_"].iter().any(|p| key.starts_with(p)))
        .map(|(key, value)| (key.to_ascii_lowercase(), value))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_path_is_a_file_url() {
        let dir = std::env::temp_dir();
        let location =
            Location::parse(&dir.join("x.db").display().to_string(), &BTreeMap::new()).unwrap();
        assert!(location.url.starts_with("file:///"), "{}", location.url);
        assert!(location.path.as_ref().ends_with("x.db"));
        assert!(location.manifest().url.ends_with("x.db.manifest.json"));
    }

    #[test]
    fn children_join_with_one_slash() {
        let base = Location::parse("file:///tmp/backups/", &BTreeMap::new()).unwrap();
        let child = base.child("a.db");
        assert_eq!(child.url, "file:///tmp/backups/a.db");
        assert_eq!(child.path.as_ref(), "tmp/backups/a.db");
    }

    #[test]
    fn an_unknown_scheme_is_refused_with_the_location() {
        let err = Location::parse("ftp://host/x", &BTreeMap::new()).unwrap_err().to_string();
        assert!(err.contains("ftp://host/x"), "{err}");
    }

    #[test]
    fn an_s3_destination_takes_its_endpoint_and_credentials() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let destination = BackupDestination {
            s3: Some(etcd_crds::S3Destination {
                bucket: "b".into(),
                prefix: "prod/".into(),
                endpoint: Some("http://127.0.0.1:9".into()),
                region: None,
                force_path_style: true,
            }),
            ..Default::default()
        };
        let credentials = BTreeMap::from([
            ("AWS_ACCESS_KEY_ID".to_owned(), "id".to_owned()),
            ("AWS_SECRET_ACCESS_KEY".to_owned(), "secret".to_owned()),
        ]);
        let location = Location::for_destination(&destination, &credentials).unwrap();
        assert_eq!(location.url, "s3://b/prod");
        assert_eq!(location.child("x").url, "s3://b/prod/x");
    }
}
