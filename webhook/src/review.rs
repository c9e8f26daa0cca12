//! One AdmissionReview in, one AdmissionReview out: parsing, dispatch by kind, and the response
//! (uid echoed, denial naming every violation, warnings, JSON Patch).

use etcd_crds::{EtcdBackupSpec, EtcdClusterSpec, EtcdRestoreSpec, GROUP};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::mutate::{self, Kind};
use crate::verdict::Verdict;

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

/// Answers one request body. `Err` carries the reason for an HTTP 400.
pub fn review(
    kind: Kind,
    mode: Mode,
    body: &[u8],
) -> Result<(AdmissionReview<DynamicObject>, Outcome), String> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body)
        .map_err(|err| format!("the body is not an AdmissionReview: {err}"))?;
    let request: AdmissionRequest<DynamicObject> =
        review.try_into().map_err(|_| "the AdmissionReview has no request".to_owned())?;
    let response = AdmissionResponse::from(&request);
    let (response, outcome) = answer(kind, mode, &request, response);
    Ok((response.into_review(), outcome))
}

fn answer(
    kind: Kind,
    mode: Mode,
    request: &AdmissionRequest<DynamicObject>,
    response: AdmissionResponse,
) -> (AdmissionResponse, Outcome) {
    if request.kind.group != GROUP || request.kind.kind != kind.name() {
        let got = format!("{}/{} {}", request.kind.group, request.kind.version, request.kind.kind);
        return (
            response.deny(format!("this endpoint admits {GROUP} {}; got {got}", kind.name())),
            Outcome::Denied,
        );
    }
    if matches!(request.operation, Operation::Delete | Operation::Connect) {
        return (response, Outcome::Allowed);
    }
    // The fields besides metadata (spec, status) are already JSON in a DynamicObject; validation
    // and defaulting read only the spec, so the object is not serialised again.
    let Some(object) = request.object.as_ref().map(|o| &o.data) else {
        return (
            response.deny(format!("{:?} request without an object", request.operation)),
            Outcome::Denied,
        );
    };
    match mode {
        Mode::Mutate => match mutate::patch(kind, object) {
            Ok(None) => (response, Outcome::Allowed),
            Ok(Some(patch)) => match response.clone().with_patch(patch) {
                Ok(patched) => (patched, Outcome::Patched),
                Err(err) => {
                    (response.deny(format!("cannot encode the patch: {err}")), Outcome::Denied)
                }
            },
            Err(reason) => (response.deny(reason), Outcome::Denied),
        },
        Mode::Validate => {
            let old = request.old_object.as_ref().map(|o| &o.data);
            match validate(kind, object, old) {
                Ok(verdict) => {
                    let warnings = (!verdict.warnings.is_empty()).then(|| verdict.warnings.clone());
                    let mut response = if verdict.is_allowed() {
                        response
                    } else {
                        response.deny(verdict.message())
                    };
                    response.warnings = warnings;
                    let outcome =
                        if verdict.is_allowed() { Outcome::Allowed } else { Outcome::Denied };
                    (response, outcome)
                }
                Err(reason) => (response.deny(reason), Outcome::Denied),
            }
        }
    }
}

fn spec_of<T: DeserializeOwned>(object: &Value) -> Result<T, String> {
    let spec = object.get("spec").cloned().unwrap_or_else(|| Value::Object(Default::default()));
    serde_json::from_value(spec).map_err(|err| format!("spec: {err}"))
}

/// Validates `object` (and, on UPDATE, against `old`).
pub fn validate(kind: Kind, object: &Value, old: Option<&Value>) -> Result<Verdict, String> {
    Ok(match kind {
        Kind::EtcdCluster => {
            let old: Option<EtcdClusterSpec> = old.map(spec_of).transpose()?;
            crate::cluster::validate(&spec_of(object)?, old.as_ref())
        }
        Kind::EtcdBackup => crate::backup::validate(&spec_of::<EtcdBackupSpec>(object)?),
        Kind::EtcdRestore => {
            let old: Option<EtcdRestoreSpec> = old.map(spec_of).transpose()?;
            crate::restore::validate(&spec_of(object)?, old.as_ref())
        }
    })
}
