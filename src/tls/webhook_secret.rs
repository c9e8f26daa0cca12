//! The webhook's TLS, shared by every replica: its CA and serving certificate in one Secret, and
//! the caBundle of the webhook configurations.

use etcd_certs::rollover::{self, RolloverStep, Trust};
use etcd_certs::secret::{CA_CERT, TLS_CERT, TLS_KEY, TLS_SECRET_TYPE, pem_field, tls_secret_data};
use etcd_certs::{CertKeyPair, Lifetimes};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use time::OffsetDateTime;

use super::Error;
use super::bundle::{BUNDLE_PROPAGATION, PREVIOUS_CA, bundle_settled, bundle_since, bundle_stamp};
use super::{is_conflict, kube_err};

/// The CA's private key, kept next to the CA certificate so any leader can re-issue.
pub const CA_KEY: &str = "ca.key";

/// The webhook's CA and serving certificate, as served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookMaterial {
    pub ca: CertKeyPair,
    pub serving: CertKeyPair,
    /// The CA being retired during a rollover, still in the caBundle.
    pub previous_ca_pem: Option<String>,
}

impl WebhookMaterial {
    fn trust(&self) -> Trust {
        Trust { current: self.ca.clone(), previous_ca_pem: self.previous_ca_pem.clone() }
    }

    /// What the webhook configurations must trust: the CA, and during a rollover the previous one.
    pub fn ca_bundle(&self) -> String {
        self.trust().bundle()
    }

    pub fn served(&self) -> Served {
        Served {
            serving: self.serving.clone(),
            ca_pem: Some(self.ca.cert_pem.clone()),
            ca_bundle: Some(self.ca_bundle()),
        }
    }
}

/// What a replica serves: the serving certificate and key, the CA that issued it when the
/// Secret names it (reported on /metrics with its expiry), and the caBundle the webhook
/// configurations must hold when the operator keeps it (during a CA rollover, two CAs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    pub serving: CertKeyPair,
    pub ca_pem: Option<String>,
    pub ca_bundle: Option<String>,
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

    /// The Secret for `material`; `bundle_changed` stamps when the caBundle last changed.
    fn secret_for(
        &self,
        material: &WebhookMaterial,
        resource_version: Option<String>,
        bundle_changed: Option<OffsetDateTime>,
    ) -> Secret {
        let mut data = tls_secret_data(&material.serving, &material.ca.cert_pem);
        data.insert(CA_KEY.to_owned(), ByteString(material.ca.key_pem.clone().into_bytes()));
        if let Some(previous) = &material.previous_ca_pem {
            data.insert(PREVIOUS_CA.to_owned(), ByteString(previous.clone().into_bytes()));
        }
        Secret {
            metadata: ObjectMeta {
                name: Some(self.secret.clone()),
                namespace: Some(self.namespace.clone()),
                resource_version,
                annotations: bundle_changed.map(bundle_stamp),
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
            previous_ca_pem: pem_field(secret, PREVIOUS_CA).ok(),
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
        let material = WebhookMaterial { ca: pki.ca, serving: pki.serving, previous_ca_pem: None };
        match api.create(&PostParams::default(), &self.secret_for(&material, None, None)).await {
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

    /// The serving certificate as someone else issued it (`--webhook-certificate provided`: the
    /// chart at install time, cert-manager, a person): `tls.crt` and `tls.key`, and `ca.crt` if
    /// given. Read only, never written: renewing it, and the webhook configurations' caBundle,
    /// are the issuer's. A certificate that does not name the Service, or nears its end, is
    /// served still (it is what the API server was told to trust) and logged.
    pub async fn read_provided(&self, now: OffsetDateTime) -> Result<Served, Error> {
        let secret = self
            .api()
            .get_opt(&self.secret)
            .await
            .map_err(kube_err(format!("get Secret {}", self.secret)))?
            .ok_or_else(|| {
                Error::NotYetThere(format!(
                    "Secret {}/{} does not exist: with --webhook-certificate provided, whoever \
                     installs the operator creates it (tls.crt, tls.key, ca.crt)",
                    self.namespace, self.secret
                ))
            })?;
        let served = Served {
            serving: CertKeyPair {
                cert_pem: pem_field(&secret, TLS_CERT)?,
                key_pem: pem_field(&secret, TLS_KEY)?,
            },
            ca_pem: pem_field(&secret, CA_CERT).ok(),
            ca_bundle: None,
        };
        let lifetimes = Lifetimes::default();
        if let Some(reason) = etcd_certs::needs_renewal(
            &served.serving.cert_pem,
            Some(&self.names()),
            served.ca_pem.as_deref(),
            now,
            &lifetimes,
        )? {
            tracing::warn!(secret = %self.secret, %reason, "the provided webhook certificate should be re-issued by its issuer");
        }
        Ok(served)
    }

    /// The leader's rotation, one step at a time: re-issues the serving certificate when it is
    /// due (or names changed); when the CA nears expiry, rolls it over through a caBundle holding
    /// old and new (introduce the new CA, wait for the bundle to settle, re-issue the serving
    /// certificate, retire the old CA), so that the API server trusts what is served at every
    /// moment. Replaces the Secret only if nobody changed it meanwhile; returns the new material.
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
        let ca_name = format!("{}-ca", self.service);
        let step = rollover::next_step(
            &current.trust(),
            &[&current.serving.cert_pem],
            bundle_settled(&secret, now, BUNDLE_PROPAGATION),
            false,
            &ca_name,
            now,
            &lifetimes,
        )?;
        let (next, bundle_changed) = match &step {
            RolloverStep::AwaitBundle => return Ok(None),
            RolloverStep::IntroduceCa(_) | RolloverStep::RetirePreviousCa => {
                let trust = rollover::apply(current.trust(), &step);
                tracing::info!(secret = %self.secret, ?step, "webhook CA rollover");
                let next = WebhookMaterial {
                    ca: trust.current,
                    previous_ca_pem: trust.previous_ca_pem,
                    serving: current.serving,
                };
                (next, Some(now))
            }
            RolloverStep::ReissueLeaves | RolloverStep::Steady => {
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
                let serving =
                    etcd_certs::webhook::issue_serving(&current.ca, &names, now, &lifetimes)?;
                (WebhookMaterial { serving, ..current }, None)
            }
        };
        // A bundle stamp is kept until the bundle changes again.
        let stamp = bundle_changed.or_else(|| bundle_since(&secret));
        api.replace(
            &self.secret,
            &PostParams::default(),
            &self.secret_for(&next, secret.metadata.resource_version, stamp),
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
