//! The webhook's [`Authorizer`]: whether the author of a request may do what it asks of the
//! operator (read a Secret it names, create or delete the cluster an EtcdRestore names, read the
//! EtcdBackup it restores from), asked of kube-apiserver with a SubjectAccessReview each, in the
//! object's namespace, as the request's user, groups and extra, so that RBAC, the Node
//! authorizer and any webhook authorizer all have their say.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use etcd_webhook::Authorizer;
use etcd_webhook::access::{Check, Use};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

/// Admission waits for this at most (kube-apiserver gives the webhook 10 s in all).
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

pub struct SubjectAccess {
    client: kube::Client,
}

impl SubjectAccess {
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }

    async fn allowed(&self, check: &Check, asked: &Use) -> Result<bool, String> {
        let requester = &check.requester;
        let (group, resource, verb) = asked.need.attributes();
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(requester.username.clone()),
                uid: Some(requester.uid.clone()).filter(|uid| !uid.is_empty()),
                groups: Some(requester.groups.clone()),
                extra: Some(requester.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(check.namespace.clone()),
                    group: Some(group.into()),
                    verb: Some(verb.into()),
                    resource: Some(resource.into()),
                    name: Some(asked.name.clone()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answered = api.create(&PostParams::default(), &review).await.map_err(|err| {
            format!("SubjectAccessReview to {} {}: {err}", asked.need.words(), asked.name)
        })?;
        Ok(answered.status.is_some_and(|status| status.allowed))
    }
}

impl Authorizer for SubjectAccess {
    fn denied<'a>(
        &'a self,
        check: &'a Check,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Use>, String>> + Send + 'a>> {
        Box::pin(async move {
            let asked = async {
                let mut denied = Vec::new();
                for asked in &check.uses {
                    if !self.allowed(check, asked).await? {
                        denied.push(asked.clone());
                    }
                }
                Ok(denied)
            };
            tokio::time::timeout(ANSWER_WITHIN, asked)
                .await
                .map_err(|_| format!("the API server did not answer within {ANSWER_WITHIN:?}"))?
        })
    }
}

/// For the standalone `webhook` command, which has no API server to ask: a request that asks
/// anything of its author's rights is refused, saying why, rather than admitted unchecked.
pub struct NoApiServer;

impl Authorizer for NoApiServer {
    fn denied<'a>(
        &'a self,
        _check: &'a Check,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Use>, String>> + Send + 'a>> {
        Box::pin(async {
            Err("this webhook runs without an API server to ask (etcd-operator webhook); \
                 etcd-operator run checks them"
                .to_owned())
        })
    }
}
