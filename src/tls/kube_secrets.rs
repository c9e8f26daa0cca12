//! TLS material kept in Kubernetes: the webhook's CA and serving certificate (one Secret, shared
//! by every replica), the caBundle of the webhook configurations, and each cluster's PKI Secrets.

use std::collections::BTreeMap;

use etcd_certs::secret::{CA_CERT, TLS_CERT, TLS_KEY, TLS_SECRET_TYPE, pem_field, tls_secret_data};
use etcd_certs::{CertKeyPair, ClusterPki, ClusterPkiRequest, Lifetimes};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use time::OffsetDateTime;

use super::Error;

/// The CA's private key, kept next to the CA certificate so any leader can re-issue.
pub const CA_KEY: &str = "ca.key";

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube { what, source }
}

fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409)
}

/// The webhook's CA and serving certificate, as served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookMaterial {
    pub ca: CertKeyPair,
    pub serving: CertKeyPair,
}

/// Where the webhook's TLS lives.
#[derive(Clone)]
pub struct WebhookTls {
    pub client: Client,
    pub namespace: String,
    pub secret: String,
    pub service: String,
    /// Name of both the Validating- and the MutatingWebhookConfiguration.
    pub configuration: String,
}

impl WebhookTls {
    fn api(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn names(&self) -> Vec<String> {
        etcd_certs::webhook::service_names(&self.service, &self.namespace)
    }

    fn secret_for(&self, material: &WebhookMaterial, resource_version: Option<String>) -> Secret {
        let mut data = tls_secret_data(&material.serving, &material.ca.cert_pem);
        data.insert(CA_KEY.to_owned(), ByteString(material.ca.key_pem.clone().into_bytes()));
        Secret {
            metadata: ObjectMeta {
                name: Some(self.secret.clone()),
                namespace: Some(self.namespace.clone()),
                resource_version,
                ..ObjectMeta::default()
            },
            type_: Some(TLS_SECRET_TYPE.to_owned()),
            data: Some(data),
            ..Secret::default()
        }
    }

    fn decode(secret: &Secret) -> Result<WebhookMaterial, Error> {
        Ok(WebhookMaterial {
            ca: CertKeyPair {
                cert_pem: pem_field(secret, CA_CERT)?,
                key_pem: pem_field(secret, CA_KEY)?,
            },
            serving: CertKeyPair {
                cert_pem: pem_field(secret, TLS_CERT)?,
                key_pem: pem_field(secret, TLS_KEY)?,
            },
        })
    }

    /// The material every replica serves: read from the Secret, or created if absent. When two
    /// replicas create at once, the API server accepts one; the other gets 409 and reads the winner's.
    pub async fn ensure(&self, now: OffsetDateTime) -> Result<WebhookMaterial, Error> {
        let api = self.api();
        if let Some(secret) = api
            .get_opt(&self.secret)
            .await
            .map_err(kube_err(format!("get Secret {}", self.secret)))?
        {
            return Self::decode(&secret);
        }
        let pki = etcd_certs::issue_webhook_pki(&self.names(), now)?;
        let material = WebhookMaterial { ca: pki.ca, serving: pki.serving };
        match api.create(&PostParams::default(), &self.secret_for(&material, None)).await {
            Ok(_) => {
                tracing::info!(secret = %self.secret, "created the webhook TLS Secret");
                Ok(material)
            }
            Err(err) if is_conflict(&err) => {
                let winner = api
                    .get(&self.secret)
                    .await
                    .map_err(kube_err(format!("get Secret {}", self.secret)))?;
                Self::decode(&winner)
            }
            Err(err) => Err(kube_err(format!("create Secret {}", self.secret))(err)),
        }
    }

    /// The leader's rotation: re-issues the serving certificate from the same CA when it is due
    /// (or names changed), replacing the Secret only if nobody changed it meanwhile. Returns the
    /// new material when it rotated.
    pub async fn rotate_if_due(
        &self,
        now: OffsetDateTime,
    ) -> Result<Option<WebhookMaterial>, Error> {
        let api = self.api();
        let secret =
            api.get(&self.secret).await.map_err(kube_err(format!("get Secret {}", self.secret)))?;
        let current = Self::decode(&secret)?;
        let lifetimes = Lifetimes::default();
        let names = self.names();
        let Some(reason) = etcd_certs::needs_renewal(
            &current.serving.cert_pem,
            Some(&names),
            Some(&current.ca.cert_pem),
            now,
            &lifetimes,
        )?
        else {
            return Ok(None);
        };
        tracing::info!(secret = %self.secret, %reason, "re-issuing the webhook serving certificate");
        let serving = etcd_certs::webhook::issue_serving(&current.ca, &names, now, &lifetimes)?;
        let next = WebhookMaterial { ca: current.ca, serving };
        api.replace(
            &self.secret,
            &PostParams::default(),
            &self.secret_for(&next, secret.metadata.resource_version),
        )
        .await
        .map_err(kube_err(format!("replace Secret {}", self.secret)))?;
        Ok(Some(next))
    }

    /// Sets `caBundle` (PEM) on every webhook of both configurations, guarded by their
    /// resourceVersion so a concurrent edit is not overwritten.
    pub async fn inject_ca_bundle(&self, ca_bundle_pem: &str) -> Result<(), Error> {
        let encoded =
            serde_json::to_value(ByteString(ca_bundle_pem.as_bytes().to_vec())).unwrap_or_default();
        self.inject_into::<ValidatingWebhookConfiguration>(&encoded, |c| {
            c.webhooks.as_ref().map_or(0, Vec::len)
        })
        .await?;
        self.inject_into::<MutatingWebhookConfiguration>(&encoded, |c| {
            c.webhooks.as_ref().map_or(0, Vec::len)
        })
        .await
    }

    async fn inject_into<K>(
        &self,
        encoded: &serde_json::Value,
        webhooks: impl Fn(&K) -> usize,
    ) -> Result<(), Error>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::all(self.client.clone());
        let what = |verb: &str| format!("{verb} {} {}", K::kind(&()), self.configuration);
        let config = api.get(&self.configuration).await.map_err(kube_err(what("get")))?;
        let patch =
            ca_bundle_patch(config.meta().resource_version.clone(), webhooks(&config), encoded);
        api.patch(&self.configuration, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
            .map_err(kube_err(what("patch")))?;
        Ok(())
    }
}

/// A JSON Patch that tests the resourceVersion, then sets the caBundle of webhooks `0..count`.
fn ca_bundle_patch(
    resource_version: Option<String>,
    count: usize,
    encoded: &serde_json::Value,
) -> json_patch::Patch {
    let mut ops =
        vec![json!({"op": "test", "path": "/metadata/resourceVersion", "value": resource_version})];
    ops.extend((0..count).map(|i| json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": encoded})));
    serde_json::from_value(serde_json::Value::Array(ops))
        .unwrap_or_else(|_| json_patch::Patch(Vec::new()))
}

/// Names of a cluster's PKI Secrets.
pub fn cluster_secret_names(cluster: &str) -> [(PkiPart, String); 5] {
    [
        (PkiPart::Ca, format!("{cluster}-ca")),
        (PkiPart::Peer, format!("{cluster}-peer-tls")),
        (PkiPart::Server, format!("{cluster}-server-tls")),
        (PkiPart::Client, format!("{cluster}-client-tls")),
        (PkiPart::UserClient, format!("{cluster}-user-client-tls")),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PkiPart {
    Ca,
    Peer,
    Server,
    Client,
    UserClient,
}

fn part_of(pki: &ClusterPki, part: PkiPart) -> &CertKeyPair {
    match part {
        PkiPart::Ca => &pki.ca,
        PkiPart::Peer => &pki.peer,
        PkiPart::Server => &pki.server,
        PkiPart::Client => &pki.client,
        PkiPart::UserClient => &pki.user_client,
    }
}

/// What ensuring a cluster's PKI did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PkiOutcome {
    Unchanged,
    Created,
    /// Leaves re-issued; the reason of the first that was due.
    Rotated(String),
}

/// Creates a cluster's PKI Secrets when absent and re-issues leaves that are due (or whose names
/// changed), keeping the CA. Secrets are owned by the EtcdCluster so they go with it.
pub async fn ensure_cluster_pki(
    client: &Client,
    namespace: &str,
    request: &ClusterPkiRequest,
    owner: &OwnerReference,
    now: OffsetDateTime,
) -> Result<(ClusterPki, PkiOutcome), Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let names = cluster_secret_names(&request.cluster);
    let mut existing = BTreeMap::new();
    for (part, name) in &names {
        if let Some(secret) =
            api.get_opt(name).await.map_err(kube_err(format!("get Secret {name}")))?
        {
            existing.insert(name.clone(), (*part, secret));
        }
    }
    let ca_name = &names[0].1;
    let Some((_, ca_secret)) = existing.get(ca_name) else {
        let pki = etcd_certs::issue_cluster_pki(request, now)?;
        for (part, name) in &names {
            let secret =
                cluster_secret(name, namespace, part_of(&pki, *part), &pki.ca, owner, None);
            match api.create(&PostParams::default(), &secret).await {
                Ok(_) => {}
                // A Secret left from an interrupted earlier attempt: replaced below on the next pass.
                Err(err) if is_conflict(&err) => {
                    let current =
                        api.get(name).await.map_err(kube_err(format!("get Secret {name}")))?;
                    let secret = cluster_secret(
                        name,
                        namespace,
                        part_of(&pki, *part),
                        &pki.ca,
                        owner,
                        current.metadata.resource_version,
                    );
                    api.replace(name, &PostParams::default(), &secret)
                        .await
                        .map_err(kube_err(format!("replace Secret {name}")))?;
                }
                Err(err) => return Err(kube_err(format!("create Secret {name}"))(err)),
            }
        }
        return Ok((pki, PkiOutcome::Created));
    };
    let ca = CertKeyPair {
        cert_pem: pem_field(ca_secret, TLS_CERT)?,
        key_pem: pem_field(ca_secret, TLS_KEY)?,
    };
    let lifetimes = Lifetimes::default();
    let fresh = etcd_certs::reissue_cluster_leaves(request, ca.clone(), now, &lifetimes)?;
    let wanted = |part| match part {
        PkiPart::Peer => Some(request.peer_names()),
        PkiPart::Server => Some(request.server_names()),
        _ => Some(Vec::new()),
    };
    let mut pki = fresh.clone();
    let mut outcome = PkiOutcome::Unchanged;
    for (part, name) in names.iter().skip(1) {
        let current = existing.get(name).map(|(_, s)| s);
        let stored = current.and_then(|s| {
            Some(CertKeyPair {
                cert_pem: pem_field(s, TLS_CERT).ok()?,
                key_pem: pem_field(s, TLS_KEY).ok()?,
            })
        });
        let reason = match &stored {
            None => Some("missing".to_owned()),
            Some(pair) => etcd_certs::needs_renewal(
                &pair.cert_pem,
                wanted(*part).as_deref(),
                Some(&ca.cert_pem),
                now,
                &lifetimes,
            )
            .map(|r| r.map(|r| r.to_string()))
            .unwrap_or_else(|err| Some(err.to_string())),
        };
        let Some(reason) = reason else {
            if let Some(pair) = stored {
                set_part(&mut pki, *part, pair);
            }
            continue;
        };
        tracing::info!(secret = %name, %reason, "re-issuing a cluster certificate");
        let secret = cluster_secret(
            name,
            namespace,
            part_of(&fresh, *part),
            &ca,
            owner,
            current.and_then(|s| s.metadata.resource_version.clone()),
        );
        if current.is_some() {
            api.replace(name, &PostParams::default(), &secret)
                .await
                .map_err(kube_err(format!("replace Secret {name}")))?;
        } else {
            api.create(&PostParams::default(), &secret)
                .await
                .map_err(kube_err(format!("create Secret {name}")))?;
        }
        if outcome == PkiOutcome::Unchanged {
            outcome = PkiOutcome::Rotated(format!("{name}: {reason}"));
        }
    }
    Ok((pki, outcome))
}

fn set_part(pki: &mut ClusterPki, part: PkiPart, pair: CertKeyPair) {
    match part {
        PkiPart::Ca => pki.ca = pair,
        PkiPart::Peer => pki.peer = pair,
        PkiPart::Server => pki.server = pair,
        PkiPart::Client => pki.client = pair,
        PkiPart::UserClient => pki.user_client = pair,
    }
}

fn cluster_secret(
    name: &str,
    namespace: &str,
    pair: &CertKeyPair,
    ca: &CertKeyPair,
    owner: &OwnerReference,
    resource_version: Option<String>,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            owner_references: Some(vec![owner.clone()]),
            resource_version,
            ..ObjectMeta::default()
        },
        type_: Some(TLS_SECRET_TYPE.to_owned()),
        data: Some(tls_secret_data(pair, &ca.cert_pem)),
        ..Secret::default()
    }
}
