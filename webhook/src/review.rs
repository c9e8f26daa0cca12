//! One AdmissionReview in, one AdmissionReview out: parsing, dispatch by kind, and the response
//! (uid echoed, denial naming every violation, warnings, JSON Patch).
//!
//! The review is read into types that hold only what an answer needs: the uid, the kind, the
//! operation and each object's spec as raw JSON text. Everything else kube-apiserver sends (the
//! objects' metadata with its managed fields and last-applied annotation, userInfo, options) is
//! skipped by the parser without being built, which was most of the cost of a review when it was
//! read into a `serde_json::Value` tree. The spec is read straight into its API type.

use std::borrow::Cow;

use base64::prelude::{BASE64_STANDARD, Engine as _};
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
#[derive(Debug)]
pub struct Answer {
    pub uid: String,
    pub allowed: bool,
    /// Why the request is denied (`status.message`, which kube-apiserver shows the user); empty
    /// when it is allowed.
    pub message: String,
    /// The JSON Patch, as JSON text; base64 on the wire, as Go's `[]byte`.
    pub patch: Option<Vec<u8>>,
    pub warnings: Vec<String>,
}

impl Answer {
    fn allow(uid: &str) -> Self {
        Self {
            uid: uid.to_owned(),
            allowed: true,
            message: String::new(),
            patch: None,
            warnings: Vec::new(),
        }
    }

    fn deny(mut self, message: impl Into<String>) -> Self {
        self.allowed = false;
        self.message = message.into();
        self
    }

    /// The AdmissionReview that carries this answer, as JSON.
    ///
    /// Written out by hand rather than derived: the patch is most of an answer, and its base64
    /// is encoded straight into the buffer, where serde would encode it into a string of its own
    /// and then scan every byte of that for characters to escape (the base64 alphabet has none).
    /// The strings that can hold anything (uid, message, warnings) are written by serde_json.
    pub fn to_json(&self) -> Vec<u8> {
        let patch = self.patch.as_deref().map_or(0, |p| p.len().div_ceil(3) * 4);
        // Sized for the envelope, the message and the patch: the buffer is never grown.
        let mut out = Vec::with_capacity(256 + self.message.len() + patch);
        out.extend_from_slice(br#"{"apiVersion":""#);
        out.extend_from_slice(API_VERSION.as_bytes());
        out.extend_from_slice(br#"","kind":""#);
        out.extend_from_slice(KIND.as_bytes());
        out.extend_from_slice(br#"","response":{"uid":"#);
        json(&mut out, &self.uid);
        out.extend_from_slice(br#","allowed":"#);
        out.extend_from_slice(if self.allowed { b"true" } else { b"false" });
        out.extend_from_slice(br#","status":{"#);
        if !self.message.is_empty() {
            out.extend_from_slice(br#""message":"#);
            json(&mut out, &self.message);
        }
        out.push(b'}');
        if let Some(bytes) = &self.patch {
            out.extend_from_slice(br#","patchType":"JSONPatch","patch":""#);
            let start = out.len();
            out.resize(start + patch, 0);
            // The slice is the padded length of the encoding: it always fits.
            let written = BASE64_STANDARD.encode_slice(bytes, &mut out[start..]).unwrap_or(0);
            out.truncate(start + written);
            out.push(b'"');
        }
        if !self.warnings.is_empty() {
            out.extend_from_slice(br#","warnings":"#);
            json(&mut out, &self.warnings);
        }
        out.extend_from_slice(b"}}");
        out
    }
}

/// Appends `value` as JSON. Strings and lists of strings only: writing them cannot fail.
fn json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(out, value);
}

/// Answers one request body. `Err` is a body that is not an AdmissionReview v1 with a request
/// (HTTP 400); everything else, a spec that does not parse included, is answered.
pub fn review(kind: Kind, mode: Mode, body: &[u8]) -> Result<(Answer, Outcome), Error> {
    // Checked as a whole, once: the parser then borrows every string without checking each.
    let incoming: Incoming = serde_json::from_str(std::str::from_utf8(body)?)?;
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
            if let Some(old) = old
                && same_spec(object.spec, old)
            {
                // What changed is metadata (a finalizer removed, an annotation of the operator's
                // set): the spec was admitted before, and a rule tightened since must not make
                // the object impossible to annotate or delete.
                return (answer, Outcome::Allowed);
            }
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
            let answer = Answer { patch: Some(patch), ..answer };
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

/// Whether an UPDATE leaves the spec as it was (compared as JSON values, not as text).
fn same_spec(new: Option<&RawValue>, old: Option<&RawValue>) -> bool {
    let value = |raw: Option<&RawValue>| -> Option<serde_json::Value> {
        serde_json::from_str(raw.map_or("null", RawValue::get)).ok()
    };
    match (value(new), value(old)) {
        (Some(new), Some(old)) => new == old,
        _ => false,
    }
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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn parsed(answer: &Answer) -> Value {
        serde_json::from_slice(&answer.to_json()).expect("the answer is JSON")
    }

    #[test]
    fn an_answer_is_an_admission_review_with_every_string_escaped() {
        let denied = Answer {
            warnings: vec!["size 1: \"no\" fault tolerance\n".into(), "\u{1F512}\\".into()],
            ..Answer::allow("u\"i\\d\u{0}").deny("line one\nline \"two\"\t\u{7f}é")
        };
        assert_eq!(
            parsed(&denied),
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {
                "uid": "u\"i\\d\u{0}", "allowed": false,
                "status": {"message": "line one\nline \"two\"\t\u{7f}é"},
                "warnings": ["size 1: \"no\" fault tolerance\n", "\u{1F512}\\"]}})
        );
        assert_eq!(
            parsed(&Answer::allow("b3b2")),
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                   "response": {"uid": "b3b2", "allowed": true, "status": {}}})
        );
    }

    #[test]
    fn the_patch_is_base64_of_every_length() {
        // 0, 1 and 2 bytes past a multiple of three: no padding, "==" and "=".
        for len in [0_usize, 1, 2, 3, 299, 300, 301] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
            let answer = Answer { patch: Some(bytes.clone()), ..Answer::allow("x") };
            let response = &parsed(&answer)["response"];
            assert_eq!(response["patchType"], "JSONPatch");
            let text = response["patch"].as_str().expect("a string");
            assert_eq!(BASE64_STANDARD.decode(text).expect("base64"), bytes, "{len} bytes");
            // Written into the buffer it was sized for, never grown.
            assert_eq!(answer.to_json().capacity(), 256 + len.div_ceil(3) * 4, "{len} bytes");
        }
    }
}
