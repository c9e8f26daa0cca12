//! The operator administrator's rules, applied to a request validation has allowed: which image
//! repositories members may run ([`crate::images`]), where a backup may keep its objects
//! ([`crate::destinations`]) and what a request may ask of the operator that its author could
//! not do themselves ([`crate::access`]). They read what validation skips: the author, the
//! namespace, the name, the old object and the other backups.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::access::{self, Authorizer, Requester};
use crate::destinations::KnownBackups;
use crate::mutate::Kind;
use crate::review::{Answer, Outcome};

/// What the operator's administrator decides beyond the API's own rules.
pub struct Policy {
    /// Whether a request's author may do what it asks of the operator.
    pub authorizer: Arc<dyn Authorizer>,
    /// The image repositories members may run.
    pub repositories: Vec<String>,
    /// The EtcdBackups that exist, whose destinations a new one may not overlap.
    pub backups: Arc<dyn KnownBackups>,
}

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(borrow)]
    request: Option<Request<'a>>,
}

/// What these rules read of a review.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request<'a> {
    #[serde(default)]
    pub namespace: String,
    /// The object's name (generated already for a `generateName` create).
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub user_info: Requester,
    #[serde(borrow, default)]
    object: Option<Object<'a>>,
    #[serde(borrow, default)]
    old_object: Option<Object<'a>>,
}

#[derive(Deserialize)]
struct Object<'a> {
    #[serde(borrow, default)]
    spec: Option<&'a RawValue>,
}

impl<'a> Request<'a> {
    /// Reads a review body; `None` for one that is not a review with a request (validation has
    /// answered it already).
    pub fn parse(body: &'a [u8]) -> Option<Self> {
        serde_json::from_slice::<Incoming>(body).ok()?.request
    }

    /// The object's spec as JSON text, `None` without an object; `{}` for an object without one.
    pub fn spec(&self) -> Option<&'a str> {
        Some(spec_text(self.object.as_ref()?))
    }

    /// The old object's spec (an UPDATE), the same way.
    pub fn old_spec(&self) -> Option<&'a str> {
        Some(spec_text(self.old_object.as_ref()?))
    }
}

fn spec_text<'a>(object: &Object<'a>) -> &'a str {
    object.spec.map_or("{}", RawValue::get)
}

/// `answer` (allowed by validation) as `policy` would have it: denied for a repository it does
/// not allow, or for what its author may not do themselves (each named), or when that cannot be
/// asked (the request can be made again).
pub async fn admit(
    kind: Kind,
    body: &[u8],
    mut answer: Answer,
    policy: &Policy,
) -> (Answer, Outcome) {
    let Some(request) = Request::parse(body) else {
        return (answer, Outcome::Allowed);
    };
    let local = crate::images::denial(kind, &request, &policy.repositories)
        .or_else(|| crate::destinations::denial(kind, &request, policy.backups.as_ref()));
    let denial = match local {
        Some(denial) => denial,
        None => {
            let Some(check) = access::check(kind, &request) else {
                return (answer, Outcome::Allowed);
            };
            let who = &check.requester.username;
            match policy.authorizer.denied(&check).await {
                Ok(denied) if denied.is_empty() => return (answer, Outcome::Allowed),
                Ok(denied) => denied
                    .iter()
                    .map(|u| {
                        format!(
                            "{}: {who} may not {} {} in {}; {}",
                            u.field,
                            u.need.words(),
                            u.name,
                            check.namespace,
                            u.need.why()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
                Err(why) => format!("cannot check what {who} may do: {why}"),
            }
        }
    };
    answer.allowed = false;
    answer.message = denial;
    (answer, Outcome::Denied)
}
