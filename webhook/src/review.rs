//! One AdmissionReview in, one AdmissionReview out: parsing, dispatch by kind, and the response
//! (uid echoed, denial naming every violation, warnings, JSON Patch).
//!
//! The review is read into types that hold only what an answer needs: the uid, the kind, the
//! operation and each object's spec as raw JSON text. Everything else kube-apiserver sends (the
//! objects' metadata with its managed fields and last-applied annotation, userInfo, options) is
//! skipped by the parser without being built, which was most of the cost of a review when it was
//! read into a `serde_json::Value` tree. The spec is read straight into its API type.

use std::borrow::Cow;

use etcd_crds::{EtcdBackupSpec, EtcdClusterSpec, EtcdRestoreSpec, GROUP};
use kube::core::admission::Operation;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::Error;
use crate::mutate::{self, Kind};
use crate::verdict::Verdict;

/// The only AdmissionReview version the webhook configurations ask kube-apiserver for.
pub const API_VERSION: &str = "admission.k8s.io/v1";
const KIND: &str = "AdmissionReview";

/// What the webhook does with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Validate,
    Mutate,
}

/// How a request ended, for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Patched,
    Denied,
    /// Not an AdmissionReview at all: answered with HTTP 400.
    BadRequest,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Patched => "patched",
            Self::Denied => "denied",
            Self::BadRequest => "bad_request",
        }
    }
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::EtcdCluster => "EtcdCluster",
            Kind::EtcdBackup => "EtcdBackup",
            Kind::EtcdRestore => "EtcdRestore",
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Incoming<'a> {
    #[serde(borrow)]
    api_version: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    request: Option<Request<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request<'a> {
    #[serde(borrow)]
    uid: Cow<'a, str>,
    #[serde(borrow)]
    kind: GroupVersionKind<'a>,
    operation: Operation,
    #[serde(borrow, default)]
    object: Option<Object<'a>>,
    #[serde(borrow, default)]
    old_object: Option<Object<'a>>,
}

#[derive(Deserialize)]
struct GroupVersionKind<'a> {
    #[serde(borrow)]
    group: Cow<'a, str>,
    #[serde(borrow)]
    version: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
}

/// An object of the review: its spec, as the JSON text it arrived in.
#[derive(Deserialize)]
struct Object<'a> {
    #[serde(borrow, default)]
    spec: Option<&'a RawValue>,
}

/// The `response` of the AdmissionReview sent back.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Answer {
    pub uid: String,
    pub allowed: bool,
    pub status: Status,
    /// The JSON Patch, base64 on the wire as Go's `[]byte`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<k8s_openapi::ByteString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The response's status: the denial's message, which kube-apiserver shows the user.
#[derive(Debug, Default, Serialize)]
pub struct Status {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl Answer {
    fn allow(uid: &str) -> Self {
        Self {
            uid: uid.to_owned(),
            allowed: true,
            status: Status::default(),
            patch: None,
            patch_type: None,
            warnings: Vec::new(),
        }
    }

    fn deny(mut self, message: impl Into<String>) -> Self {
        self.allowed = false;
        self.status.message = message.into();
        self
    }

    /// The AdmissionReview that carries this answer, as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Outgoing<'a> {
            api_version: &'a str,
            kind: &'a str,
            response: &'a Answer,
        }
        let review = Outgoing { api_version: API_VERSION, kind: KIND, response: self };
        // Sized for the envelope and the patch in base64 (4 bytes for every 3), so that the
        // buffer is not grown and copied while it is written.
        let patch = self.patch.as_ref().map_or(0, |p| p.0.len());
        let mut out = Vec::with_capacity(256 + self.status.message.len() + patch / 3 * 4);
        // Strings, bools and base64 only: serialising cannot fail.
        let _ = serde_json::to_writer(&mut out, &review);
        out
    }
}

/// Answers one request body. `Err` is a body that is not an AdmissionReview v1 with a request
/// (HTTP 400); everything else, a spec that does not parse included, is answered.
pub fn review(kind: Kind, mode: Mode, body: &[u8]) -> Result<(Answer, Outcome), Error> {
    let incoming: Incoming = serde_json::from_slice(body)?;
    if incoming.api_version != API_VERSION || incoming.kind != KIND {
        return Err(Error::Version {
            api_version: incoming.api_version.into_owned(),
            kind: incoming.kind.into_owned(),
        });
    }
    let request = incoming.request.ok_or(Error::NoRequest)?;
    Ok(answer(kind, mode, &request))
}

fn answer(kind: Kind, mode: Mode, request: &Request) -> (Answer, Outcome) {
    let answer = Answer::allow(&request.uid);
    let requested = &request.kind;
    if requested.group != GROUP || requested.kind != kind.name() {
        let got = format!("{}/{} {}", requested.group, requested.version, requested.kind);
        let denial = format!("this endpoint admits {GROUP} {}; got {got}", kind.name());
        return (answer.deny(denial), Outcome::Denied);
    }
    if matches!(request.operation, Operation::Delete | Operation::Connect) {
        return (answer, Outcome::Allowed);
    }
    let Some(object) = &request.object else {
        let denial = format!("{:?} request without an object", request.operation);
        return (answer.deny(denial), Outcome::Denied);
    };
    match mode {
        Mode::Mutate => mutated(kind, object.spec, answer),
        Mode::Validate => {
            let old = request.old_object.as_ref().map(|old| old.spec);
            match validate(kind, object.spec, old) {
                Ok(verdict) if verdict.is_allowed() => {
                    (Answer { warnings: verdict.warnings, ..answer }, Outcome::Allowed)
                }
                Ok(verdict) => {
                    let message = verdict.message();
                    (Answer { warnings: verdict.warnings, ..answer }.deny(message), Outcome::Denied)
                }
                Err(reason) => (answer.deny(reason), Outcome::Denied),
            }
        }
    }
}

fn mutated(kind: Kind, spec: Option<&RawValue>, answer: Answer) -> (Answer, Outcome) {
    match mutate::spec_patch(kind, spec.map(RawValue::get)) {
        Ok(None) => (answer, Outcome::Allowed),
        Ok(Some(patch)) => {
            let answer = Answer {
                patch: Some(k8s_openapi::ByteString(patch)),
                patch_type: Some("JSONPatch"),
                ..answer
            };
            (answer, Outcome::Patched)
        }
        Err(reason) => (answer.deny(reason), Outcome::Denied),
    }
}

/// A review object's spec read into its API type; an absent spec reads as `{}`, so defaults
/// apply.
fn read<T: DeserializeOwned>(spec: Option<&RawValue>) -> Result<T, String> {
    serde_json::from_str(spec.map_or("{}", RawValue::get)).map_err(|err| format!("spec: {err}"))
}

/// Validates a spec (and, on UPDATE, against the old object's).
fn validate(
    kind: Kind,
    spec: Option<&RawValue>,
    old: Option<Option<&RawValue>>,
) -> Result<Verdict, String> {
    Ok(match kind {
        Kind::EtcdCluster => {
            let old: Option<EtcdClusterSpec> = old.map(read).transpose()?;
            crate::cluster::validate(&read(spec)?, old.as_ref())
        }
        Kind::EtcdBackup => crate::backup::validate(&read::<EtcdBackupSpec>(spec)?),
        Kind::EtcdRestore => {
            let old: Option<EtcdRestoreSpec> = old.map(read).transpose()?;
            crate::restore::validate(&read(spec)?, old.as_ref())
        }
    })
}
