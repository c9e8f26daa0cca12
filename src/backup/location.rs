//! Where a snapshot is: an object store and a path in it, named by a URL.
//!
//! `s3://bucket/key`, `gs://bucket/key`, `az://container/key`, `file:///dir/key`, or a plain path.
//! On the command line and in a member's pod, credentials and endpoints come from the backend's
//! usual environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`): the environment is the user's
//! own. For a tenant's EtcdBackup the operator uses only the destination and a few credential
//! keys of the tenant's Secret ([`Access::Tenant`]): never its own environment, and never a key
//! that names a file, a URL or an endpoint, each of which would let a tenant send the operator's
//! own identity (its service-account token, its node's cloud role) wherever they chose.

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

use super::endpoints::{EndpointPolicy, GuardedConnector};
use super::{Error, MANIFEST_SUFFIX};

/// Whose rights reach the store.
pub enum Access<'a> {
    /// The environment's: the CLI, `local`, and member-init, whose pod's environment holds its
    /// own cluster's credentials.
    Environment,
    /// A tenant's, from the operator: the credentials Secret's entries, by allowed key only,
    /// and endpoints the policy allows.
    Tenant { credentials: &'a BTreeMap<String, String>, endpoints: &'a EndpointPolicy },
}

/// The credential keys a tenant's Secret may hold, per backend (matched without regard to case),
/// and the sets of which one must be complete. Requiring a complete set keeps object_store from
/// falling back to the ambient identity (instance metadata, workload identity), which is the
/// operator's, not the tenant's.
struct CredentialKeys {
    backend: &'static str,
    allowed: &'static [&'static str],
    one_of: &'static [&'static [&'static str]],
}

const S3_KEYS: CredentialKeys = CredentialKeys {
    backend: "s3",
    allowed: &["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"],
    one_of: &[&["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]],
};
const GCS_KEYS: CredentialKeys = CredentialKeys {
    backend: "gcs",
    allowed: &["GOOGLE_SERVICE_ACCOUNT_KEY"],
    one_of: &[&["GOOGLE_SERVICE_ACCOUNT_KEY"]],
};
const AZURE_KEYS: CredentialKeys = CredentialKeys {
    backend: "azure",
    allowed: &[
        "AZURE_STORAGE_ACCOUNT_KEY",
        "AZURE_STORAGE_SAS_KEY",
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_TENANT_ID",
    ],
    one_of: &[
        &["AZURE_STORAGE_ACCOUNT_KEY"],
        &["AZURE_STORAGE_SAS_KEY"],
        &["AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID"],
    ],
};

impl CredentialKeys {
    /// The Secret's entries as object_store options, or why they cannot be used.
    fn options(
        &self,
        credentials: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, String> {
        let mut options = BTreeMap::new();
        let mut refused = Vec::new();
        for (key, value) in credentials {
            match self.allowed.iter().find(|k| k.eq_ignore_ascii_case(key)) {
                Some(known) => {
                    options.insert(known.to_ascii_lowercase(), value.clone());
                }
                None => refused.push(key.as_str()),
            }
        }
        if !refused.is_empty() {
            return Err(format!(
                "{} not credentials the operator takes for {}; it takes only {}",
                match refused.as_slice() {
                    [one] => format!("key {one} is"),
                    many => format!("keys {} are", many.join(", ")),
                },
                self.backend,
                self.allowed.join(", ")
            ));
        }
        let complete =
            |set: &&[&str]| set.iter().all(|k| options.contains_key(&k.to_ascii_lowercase()));
        if !self.one_of.iter().any(complete) {
            let sets: Vec<String> = self.one_of.iter().map(|set| set.join(" + ")).collect();
            return Err(format!(
                "{} needs credentials in the Secret: {} (the operator never lends a tenant its own identity)",
                self.backend,
                sets.join(", or ")
            ));
        }
        Ok(options)
    }
}

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
        let url = parse_url(location)?;
        let mut all = environment_options();
        all.extend(options.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())));
        Self::open(location, url, &all, None)
    }

    fn open(
        location: &str,
        url: url::Url,
        options: &BTreeMap<String, String>,
        connector: Option<GuardedConnector>,
    ) -> Result<Self, Error> {
        let bad = |reason: String| Error::BadLocation { location: location.to_owned(), reason };
        let (scheme, path) = ObjectStoreScheme::parse(&url).map_err(|e| bad(e.to_string()))?;
        let store =
            open_store(&scheme, &url, options, connector).map_err(|e| bad(e.to_string()))?;
        Ok(Self { store, path, url: url.to_string() })
    }

    /// The URL of the prefix an EtcdBackup destination names, as status shows it.
    pub fn url_of(destination: &BackupDestination) -> Result<String, Error> {
        Ok(parse_url(&destination_url(destination)?)?.to_string())
    }

    /// The prefix an EtcdBackup destination names, reached with `access`.
    pub fn for_destination(
        destination: &BackupDestination,
        access: &Access,
    ) -> Result<Self, Error> {
        let text = destination_url(destination)?;
        let url = parse_url(&text)?;
        let bad = |reason: String| Error::BadLocation { location: text.clone(), reason };
        let (mut options, connector) = match access {
            Access::Environment => (environment_options(), None),
            Access::Tenant { credentials, endpoints } => {
                let keys = match (&destination.s3, &destination.gcs, &destination.azure) {
                    (Some(_), _, _) => Some(&S3_KEYS),
                    (_, Some(_), _) => Some(&GCS_KEYS),
                    (_, _, Some(_)) => Some(&AZURE_KEYS),
                    // A volume is the operator pod's own file system: no credentials, no network.
                    _ => None,
                };
                let options = match keys {
                    Some(keys) => keys
                        .options(credentials)
                        .map_err(|reason| Error::BadCredentials { reason })?,
                    None => BTreeMap::new(),
                };
                let endpoint = destination.s3.as_ref().and_then(|s3| s3.endpoint.as_deref());
                let allow_http = match endpoint {
                    Some(endpoint) => {
                        let endpoint = url::Url::parse(endpoint)
                            .map_err(|e| bad(format!("endpoint {endpoint}: {e}")))?;
                        endpoints.check_url(&endpoint).map_err(bad)?;
                        endpoint.scheme() == "http"
                    }
                    None => false,
                };
                (options, Some(endpoints.connector(allow_http)))
            }
        };
        if let Some(s3) = &destination.s3 {
            if let Some(endpoint) = &s3.endpoint {
                options.insert("aws_endpoint".into(), endpoint.clone());
                options
                    .insert("aws_allow_http".into(), endpoint.starts_with("http://").to_string());
                options.insert(
                    "aws_virtual_hosted_style_request".into(),
                    (!s3.force_path_style).to_string(),
                );
            }
            let region = s3.region.clone().unwrap_or_else(|| "us-east-1".to_owned());
            // The region becomes part of the store's host name.
            if !region.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(bad(format!("region {region:?} is not a region name")));
            }
            options.insert("aws_region".into(), region);
        }
        if let Some(azure) = &destination.azure {
            options.insert("azure_storage_account_name".into(), azure.storage_account.clone());
        }
        Self::open(&text, url, &options, connector)
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
    connector: Option<GuardedConnector>,
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
            let mut builder = AmazonS3Builder::new().with_url(url).with_retry(retry());
            if let Some(connector) = connector {
                builder = builder.with_http_connector(connector);
            }
            Arc::new(configure(builder, options, |b, k, v| b.with_config(k, v)).build()?)
        }
        ObjectStoreScheme::GoogleCloudStorage => {
            let mut builder = GoogleCloudStorageBuilder::new().with_url(url).with_retry(retry());
            if let Some(connector) = connector {
                builder = builder.with_http_connector(connector);
            }
            Arc::new(configure(builder, options, |b, k, v| b.with_config(k, v)).build()?)
        }
        ObjectStoreScheme::MicrosoftAzure => {
            let mut builder = MicrosoftAzureBuilder::new().with_url(url).with_retry(retry());
            if let Some(connector) = connector {
                builder = builder.with_http_connector(connector);
            }
            Arc::new(configure(builder, options, |b, k, v| b.with_config(k, v)).build()?)
        }
        other => {
            return Err(object_store::Error::NotSupported {
                source: format!("{other:?} is not a backup destination").into(),
            });
        }
    })
}

fn parse_url(location: &str) -> Result<url::Url, Error> {
    let bad = |reason: String| Error::BadLocation { location: location.to_owned(), reason };
    if location.contains("://") {
        url::Url::parse(location).map_err(|e| bad(e.to_string()))
    } else {
        let absolute = std::path::absolute(location).map_err(|e| bad(e.to_string()))?;
        url::Url::from_file_path(&absolute)
            .map_err(|()| bad("not an absolute file path".to_owned()))
    }
}

/// The URL a destination names: its backend's scheme, bucket and prefix.
fn destination_url(destination: &BackupDestination) -> Result<String, Error> {
    match (&destination.s3, &destination.gcs, &destination.azure, &destination.volume) {
        (Some(s3), None, None, None) => Ok(join_url(&format!("s3://{}", s3.bucket), &s3.prefix)),
        (None, Some(gcs), None, None) => Ok(join_url(&format!("gs://{}", gcs.bucket), &gcs.prefix)),
        (None, None, Some(azure), None) => {
            Ok(join_url(&format!("az://{}", azure.container), &azure.prefix))
        }
        (None, None, None, Some(volume)) => Ok(volume.path.clone()),
        _ => Err(Error::BadLocation {
            location: format!("{:?}", destination.backends()),
            reason: "a destination needs exactly one of s3, gcs, azure, volume".to_owned(),
        }),
    }
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
        let endpoints = EndpointPolicy::parse(&["127.0.0.1"]).unwrap();
        let access = Access::Tenant { credentials: &credentials, endpoints: &endpoints };
        let location = Location::for_destination(&destination, &access).unwrap();
        assert_eq!(location.url, "s3://b/prod");
        assert_eq!(location.child("x").url, "s3://b/prod/x");
        assert_eq!(Location::url_of(&destination).unwrap(), "s3://b/prod");
    }

    #[test]
    fn a_tenant_secret_holds_credentials_only() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let destination = |endpoint: Option<&str>| BackupDestination {
            s3: Some(etcd_crds::S3Destination {
                bucket: "b".into(),
                prefix: String::new(),
                endpoint: endpoint.map(str::to_owned),
                region: None,
                force_path_style: true,
            }),
            ..Default::default()
        };
        let endpoints = EndpointPolicy::default();
        let keys = [("AWS_ACCESS_KEY_ID", "id"), ("AWS_SECRET_ACCESS_KEY", "secret")];
        // Each of these would have the operator read a file or call a URL of the tenant's choosing.
        for key in [
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_ENDPOINT_URL_STS",
            "aws_endpoint",
            "AWS_PROXY_URL",
            "AWS_METADATA_ENDPOINT",
        ] {
            let credentials: BTreeMap<String, String> = keys
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .chain([(key.to_owned(), "x".to_owned())])
                .collect();
            let access = Access::Tenant { credentials: &credentials, endpoints: &endpoints };
            let err =
                Location::for_destination(&destination(None), &access).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains("AWS_ACCESS_KEY_ID"), "{key}: {err}");
        }
        // Without keys object_store would take the ambient identity: the operator's.
        let none = BTreeMap::new();
        let access = Access::Tenant { credentials: &none, endpoints: &endpoints };
        let err = Location::for_destination(&destination(None), &access).unwrap_err().to_string();
        assert!(err.contains("AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY"), "{err}");
        // Keys are matched without regard to case, as before.
        let lower: BTreeMap<String, String> =
            keys.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())).collect();
        let access = Access::Tenant { credentials: &lower, endpoints: &endpoints };
        Location::for_destination(&destination(None), &access).unwrap();
        // The endpoint is checked too.
        let err = Location::for_destination(&destination(Some("https://169.254.169.254")), &access)
            .unwrap_err()
            .to_string();
        assert!(err.contains("169.254.169.254"), "{err}");
    }

    #[test]
    fn azure_and_gcs_need_a_complete_credential() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let endpoints = EndpointPolicy::default();
        let azure = BackupDestination {
            azure: Some(etcd_crds::AzureDestination {
                storage_account: "acct".into(),
                container: "c".into(),
                prefix: String::new(),
            }),
            ..Default::default()
        };
        let half = BTreeMap::from([("AZURE_CLIENT_ID".to_owned(), "id".to_owned())]);
        let access = Access::Tenant { credentials: &half, endpoints: &endpoints };
        let err = Location::for_destination(&azure, &access).unwrap_err().to_string();
        assert!(err.contains("AZURE_CLIENT_ID + AZURE_CLIENT_SECRET + AZURE_TENANT_ID"), "{err}");
        for key in ["AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST", "AZURE_USE_EMULATOR"] {
            let credentials = BTreeMap::from([
                ("AZURE_STORAGE_ACCOUNT_KEY".to_owned(), "a2V5".to_owned()),
                (key.to_owned(), "x".to_owned()),
            ]);
            let access = Access::Tenant { credentials: &credentials, endpoints: &endpoints };
            let err = Location::for_destination(&azure, &access).unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
        let gcs = BackupDestination {
            gcs: Some(etcd_crds::GcsDestination { bucket: "b".into(), prefix: String::new() }),
            ..Default::default()
        };
        let path =
            BTreeMap::from([("GOOGLE_SERVICE_ACCOUNT_PATH".to_owned(), "/var/run/x".to_owned())]);
        let access = Access::Tenant { credentials: &path, endpoints: &endpoints };
        let err = Location::for_destination(&gcs, &access).unwrap_err().to_string();
        assert!(err.contains("GOOGLE_SERVICE_ACCOUNT_PATH"), "{err}");
    }
}
