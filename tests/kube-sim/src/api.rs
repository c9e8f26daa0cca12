//! The API server's HTTP surface: authentication (bearer tokens), RBAC, discovery, and the REST
//! verbs on every kind (get, list, watch, create, update, patch, delete, deletecollection), the
//! status, scale and log subresources, and Table responses for `kubectl get`.
//!
//! Writes go through the admission chain in kube-apiserver's order (see [`crate::admission`]).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::admission::{self, Operation};
use crate::patch::{self, Manager, Part};
use crate::rbac::{self, Attributes, User};
use crate::resources::{self, Kind};
use crate::selector::Selector;
use crate::store::{self, Store};

/// How many times a patch is applied again to a fresh read before its Conflict is returned
/// (kube-apiserver retries until the request times out; a bound keeps a bug from spinning).
const PATCH_TRIES: u32 = 10;

pub type Body = BoxBody<Bytes, std::io::Error>;

/// Faults a test can switch on (through `kube-sim fault`).
#[derive(Default)]
pub struct Faults {
    /// Share of service-account requests answered 500, in thousandths.
    pub fail_permille: AtomicU32,
    counter: AtomicU64,
    /// Bumped by a simulated API server restart: open watches end.
    pub epoch: AtomicU64,
    /// Until this Unix time in ms, every request is refused (the server is "restarting").
    pub down_until_ms: AtomicU64,
}

impl Faults {
    fn should_fail(&self) -> bool {
        let permille = self.fail_permille.load(Ordering::Relaxed);
        if permille == 0 {
            return false;
        }
        // A deterministic spread: every request counts, the share of failures is exact.
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        (n * 7919 % 1000) < u64::from(permille)
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

pub struct ApiServer {
    pub store: Arc<Store>,
    pub tokens: Arc<Mutex<HashMap<String, User>>>,
    pub faults: Faults,
    pub logs: PathBuf,
    pub webhooks: admission::WebhookClient,
    pub audit: Audit,
}

/// kube-apiserver's audit log at level Metadata (`--audit-log-path`): one `audit.k8s.io/v1` Event
/// per resource request, with the user, the verb, the object and the response code. It is how a
/// person counts what a controller asks of the API server; the benchmarks do the same.
///
/// kube-apiserver writes a Metadata event at stage ResponseComplete (a watch also at
/// ResponseStarted); kube-sim writes one event per request when its answer is known, the start
/// of a watch included, which is what counting requests needs.
pub struct Audit {
    file: Mutex<std::fs::File>,
}

impl Audit {
    pub fn open(path: &std::path::Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self { file: Mutex::new(file) })
    }

    fn record(&self, user: &User, verb: &str, target: &Target, code: u16) {
        use std::io::Write;
        let mut object = json!({"resource": target.kind.plural, "apiGroup": target.kind.group, "apiVersion": target.kind.version});
        for (field, value) in [
            ("namespace", &target.namespace),
            ("name", &target.name),
            ("subresource", &target.subresource),
        ] {
            if let Some(value) = value {
                object[field] = json!(value);
            }
        }
        let stage = if verb == "watch" { "ResponseStarted" } else { "ResponseComplete" };
        let event = json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "stage": stage,
            "verb": verb, "user": {"username": user.name(), "groups": user.groups()},
            "objectRef": object, "responseStatus": {"code": code},
            "stageTimestamp": crate::store::now(),
        });
        let mut line = event.to_string();
        line.push('\n');
        // One write per event on an O_APPEND file: lines never interleave.
        let _ = self.file.lock().unwrap_or_else(|p| p.into_inner()).write_all(line.as_bytes());
    }
}

/// An API error as a metav1.Status.
#[derive(Debug)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// The write lost a race: the object changed since the request read it.
    pub stale: bool,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into(), stale: false }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn invalid(kind: &Kind, name: &str, causes: &[String]) -> Self {
        Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {}", kind.kind, causes.join(", ")),
        )
    }
}

impl From<store::Error> for ApiError {
    fn from(err: store::Error) -> Self {
        let stale = matches!(err, store::Error::Conflict { .. });
        Self { stale, ..Self::new(err.code(), err.reason(), err.to_string()) }
    }
}

fn status_body(err: &ApiError) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": err.message, "reason": err.reason, "code": err.code,
    })
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

fn respond(code: u16, value: &Value) -> Response<Body> {
    let mut response = Response::new(full(serde_json::to_vec(value).unwrap_or_default()));
    *response.status_mut() =
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
    response
}

fn error(err: &ApiError) -> Response<Body> {
    respond(err.code, &status_body(err))
}

/// The parts of a resource path.
#[derive(Debug, Clone)]
struct Target {
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn query_map(query: Option<&str>) -> HashMap<String, String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                    out.push(b);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl ApiServer {
    fn authenticate(&self, req: &Request<Incoming>) -> Option<User> {
        let header = req.headers().get("authorization")?.to_str().ok()?;
        let token = header.strip_prefix("Bearer ")?.trim();
        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).get(token).cloned()
    }

    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        if now_ms() < self.faults.down_until_ms.load(Ordering::Relaxed) {
            return error(&ApiError::new(
                503,
                "ServiceUnavailable",
                "the API server is restarting",
            ));
        }
        let path = req.uri().path().to_owned();
        match path.as_str() {
            "/healthz" | "/readyz" | "/livez" => return Response::new(full("ok")),
            "/version" => {
                return respond(
                    200,
                    &json!({
                        "major": "1", "minor": "33", "gitVersion": "v1.33.0-kube-sim",
                        "platform": "linux/amd64", "goVersion": "go1.24", "compiler": "gc"
                    }),
                );
            }
            _ => {}
        }
        let Some(user) = self.authenticate(&req) else {
            return error(&ApiError::new(401, "Unauthorized", "Unauthorized"));
        };
        if path == "/api" || path == "/api/" {
            return respond(
                200,
                &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "10.96.0.1:443"}]}),
            );
        }
        if path == "/apis" || path == "/apis/" {
            return respond(200, &self.group_list());
        }
        if path.starts_with("/openapi") {
            return self.openapi(&path);
        }
        let segments: Vec<String> = path.trim_matches('/').split('/').map(decode).collect();
        let (group, version, rest) = match segments.first().map(String::as_str) {
            Some("api") if segments.len() >= 2 => {
                (String::new(), segments[1].clone(), &segments[2..])
            }
            Some("apis") if segments.len() >= 3 => {
                (segments[1].clone(), segments[2].clone(), &segments[3..])
            }
            Some("apis") if segments.len() == 2 => {
                return match self.group(&segments[1]) {
                    Some(g) => respond(200, &g),
                    None => error(&ApiError::new(
                        404,
                        "NotFound",
                        "the server could not find the requested resource",
                    )),
                };
            }
            _ => {
                return error(&ApiError::new(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ));
            }
        };
        if rest.is_empty() {
            return match self.resource_list(&group, &version) {
                Some(list) => respond(200, &list),
                None => error(&ApiError::new(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                )),
            };
        }
        let target = match self.target(&group, &version, rest) {
            Ok(t) => t,
            Err(err) => return error(&err),
        };
        let query = query_map(req.uri().query());
        let method = req.method().clone();
        let verb = match (&method, &target.name) {
            (&Method::GET, Some(_)) => "get",
            (&Method::GET, None)
                if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) =>
            {
                "watch"
            }
            (&Method::GET, None) => "list",
            (&Method::POST, _) => "create",
            (&Method::PUT, _) => "update",
            (&Method::PATCH, _) => "patch",
            (&Method::DELETE, Some(_)) => "delete",
            (&Method::DELETE, None) => "deletecollection",
            _ => return error(&ApiError::new(405, "MethodNotAllowed", "method not allowed")),
        };
        // A list or watch selecting one name (fieldSelector=metadata.name=X) is authorized as a
        // request for that name, so resourceNames rules can grant it (requestinfo.go).
        let selected = query
            .get("fieldSelector")
            .and_then(|f| f.strip_prefix("metadata.name="))
            .filter(|name| !name.is_empty() && !name.contains([',', '=', '!']));
        let attrs = Attributes {
            verb,
            group: &group,
            resource: &target.kind.plural,
            subresource: target.subresource.as_deref(),
            namespace: target.namespace.as_deref(),
            name: target.name.as_deref().or(selected.filter(|_| matches!(verb, "list" | "watch"))),
        };
        if !rbac::allowed(&self.store, &user, &attrs) {
            let message = rbac::forbidden_message(&user, &attrs);
            tracing::info!(%message, "RBAC denied");
            self.audit.record(&user, verb, &target, 403);
            return error(&ApiError::new(403, "Forbidden", message));
        }
        if user != User::Admin && self.faults.should_fail() {
            self.audit.record(&user, verb, &target, 500);
            return error(&ApiError::new(
                500,
                "InternalError",
                "Internal error occurred: kube-sim injected failure",
            ));
        }
        let convert =
            Convert::of(req.headers().get("accept").and_then(|a| a.to_str().ok()).unwrap_or(""));
        let content_type = req
            .headers()
            .get("content-type")
            .and_then(|c| c.to_str().ok())
            .unwrap_or("application/json")
            .to_owned();
        let user_agent = req
            .headers()
            .get("user-agent")
            .and_then(|c| c.to_str().ok())
            .unwrap_or("unknown")
            .split('/')
            .next()
            .unwrap_or("unknown")
            .to_owned();
        if content_type.contains("protobuf") {
            // Only JSON and YAML are served; client-go retries a 415 in JSON.
            return error(&ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml; got {content_type}"
                ),
            ));
        }
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(err) => {
                return error(&ApiError::bad_request(format!("cannot read the body: {err}")));
            }
        };
        let ctx = Ctx { user, query, content_type, field_manager_default: user_agent, convert };
        if verb == "watch" {
            self.audit.record(&ctx.user, verb, &target, 200);
        }
        let result = match verb {
            "get" => self.get(&target, &ctx).await,
            "list" => self.list(&target, &ctx),
            "watch" => return self.watch(target, ctx),
            "create" => self.create(&target, &ctx, &body).await.map(|v| (201, v)),
            "update" => self.update(&target, &ctx, &body).await.map(|v| (200, v)),
            "patch" => self.patch(&target, &ctx, &body).await,
            "delete" => self.delete(&target, &ctx, &body).await.map(|v| (200, v)),
            _ => self.delete_collection(&target, &ctx, &body).await.map(|v| (200, v)),
        };
        let code = result.as_ref().map_or_else(|err| err.code, |(code, _)| *code);
        self.audit.record(&ctx.user, verb, &target, code);
        match result {
            Ok((code, Value::String(text))) => {
                let mut r = Response::new(full(text));
                *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
                r
            }
            Ok((code, value)) if verb == "list" => respond(code, &value),
            Ok((code, value)) => match ctx.convert {
                Convert::Table if verb == "get" => {
                    let kind = self.current_kind(&target.kind);
                    respond(code, &table(&kind, &[value], &ctx.query, "0"))
                }
                Convert::PartialObjectMetadata => respond(code, &partial_object_metadata(&value)),
                Convert::PartialObjectMetadataList => error(&ApiError::new(
                    406,
                    "NotAcceptable",
                    "you requested PartialObjectMetadataList, but the requested object is not a list",
                )),
                _ => respond(code, &value),
            },
            Err(err) => {
                tracing::debug!(verb, resource = %target.kind.plural, message = %err.message, "request failed");
                error(&err)
            }
        }
    }

    fn kinds(&self) -> Vec<Kind> {
        self.store.lock().kinds.clone()
    }

    fn current_kind(&self, kind: &Kind) -> Kind {
        self.store.lock().kind(&kind.resource()).cloned().unwrap_or_else(|| kind.clone())
    }

    fn target(&self, group: &str, version: &str, rest: &[String]) -> Result<Target, ApiError> {
        let (namespace, plural, name, sub) = if rest[0] == "namespaces"
            && rest.len() >= 3
            && !matches!(rest[2].as_str(), "status" | "finalize")
        {
            (Some(rest[1].clone()), rest[2].clone(), rest.get(3).cloned(), rest.get(4).cloned())
        } else {
            (None, rest[0].clone(), rest.get(1).cloned(), rest.get(2).cloned())
        };
        let kind = self
            .kinds()
            .into_iter()
            .find(|k| k.group == group && k.version == version && k.plural == plural)
            .ok_or_else(|| {
                ApiError::new(404, "NotFound", "the server could not find the requested resource")
            })?;
        if let Some(sub) = &sub {
            let known = (sub == "status" && kind.status)
                || (sub == "scale" && kind.scale.is_some())
                || kind.extra_subresources.contains(&sub.as_str());
            if !known {
                return Err(ApiError::new(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ));
            }
        }
        Ok(Target {
            namespace: if kind.namespaced { namespace } else { None },
            kind,
            name,
            subresource: sub,
        })
    }

    fn group_list(&self) -> Value {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for kind in self.kinds().iter().filter(|k| !k.group.is_empty()) {
            match groups.iter_mut().find(|(g, _)| *g == kind.group) {
                Some((_, versions)) if !versions.contains(&kind.version) => {
                    versions.push(kind.version.clone())
                }
                Some(_) => {}
                None => groups.push((kind.group.clone(), vec![kind.version.clone()])),
            }
        }
        let groups: Vec<Value> =
            groups.into_iter().map(|(name, versions)| group_value(&name, &versions)).collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    fn group(&self, name: &str) -> Option<Value> {
        let versions: Vec<String> = self
            .kinds()
            .iter()
            .filter(|k| k.group == name)
            .map(|k| k.version.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        (!versions.is_empty()).then(|| group_value(name, &versions))
    }

    fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let kinds: Vec<Kind> =
            self.kinds().into_iter().filter(|k| k.group == group && k.version == version).collect();
        if kinds.is_empty() {
            return None;
        }
        let mut resources = Vec::new();
        for kind in &kinds {
            resources.push(json!({
                "name": kind.plural, "singularName": kind.singular, "namespaced": kind.namespaced,
                "kind": kind.kind,
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
                "shortNames": kind.short_names, "categories": kind.categories,
            }));
            let mut subs: Vec<&str> = kind.extra_subresources.clone();
            if kind.status {
                subs.push("status");
            }
            if kind.scale.is_some() {
                subs.push("scale");
            }
            for sub in subs {
                let (sub_kind, verbs) = match sub {
                    "scale" => ("Scale", json!(["get", "patch", "update"])),
                    "log" => ("Pod", json!(["get"])),
                    _ => (kind.kind.as_str(), json!(["get", "patch", "update"])),
                };
                let mut entry = json!({"name": format!("{}/{sub}", kind.plural), "singularName": "", "namespaced": kind.namespaced, "kind": sub_kind, "verbs": verbs});
                if sub == "scale" {
                    entry["group"] = json!("autoscaling");
                    entry["version"] = json!("v1");
                }
                resources.push(entry);
            }
        }
        let group_version =
            if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") };
        Some(
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
        )
    }

    /// OpenAPI v3: kubectl reads it to learn that the server validates fields itself
    /// (`fieldValidation`), so it does not need a client-side schema.
    fn openapi(&self, path: &str) -> Response<Body> {
        let kinds = self.kinds();
        if path == "/openapi/v3" || path == "/openapi/v3/" {
            let mut paths = serde_json::Map::new();
            for kind in &kinds {
                let gv = kind.url_prefix();
                paths.insert(
                    gv.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash=0")}),
                );
            }
            return respond(200, &json!({"paths": paths}));
        }
        if let Some(gv) = path.strip_prefix("/openapi/v3/") {
            let mut paths = serde_json::Map::new();
            for kind in &kinds {
                let prefix = kind.url_prefix();
                if prefix != gv {
                    continue;
                }
                let base = if kind.namespaced {
                    format!("/{prefix}/namespaces/{{namespace}}/{}/{{name}}", kind.plural)
                } else {
                    format!("/{prefix}/{}/{{name}}", kind.plural)
                };
                let op = json!({
                    "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": {"group": kind.group, "version": kind.version, "kind": kind.kind},
                });
                paths.insert(base, json!({"patch": op, "put": op}));
            }
            return respond(
                200,
                &json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.33.0"}, "paths": paths, "components": {"schemas": {}}}),
            );
        }
        error(&ApiError::new(404, "NotFound", "the server could not find the requested resource"))
    }

    async fn get(&self, target: &Target, ctx: &Ctx) -> Result<(u16, Value), ApiError> {
        let name = target.name.clone().unwrap_or_default();
        let namespace = target.namespace.clone().unwrap_or_default();
        let object =
            self.store.get(&target.kind.resource(), &namespace, &name).ok_or_else(|| {
                ApiError::from(store::Error::NotFound {
                    resource: target.kind.resource_name(),
                    name: name.clone(),
                })
            })?;
        match target.subresource.as_deref() {
            Some("scale") => Ok((200, scale_of(&target.kind, &object))),
            Some("log") => {
                let container = ctx.query.get("container").cloned().or_else(|| {
                    object["spec"]["containers"][0]["name"].as_str().map(str::to_owned)
                });
                let file = self
                    .logs
                    .join(&namespace)
                    .join(&name)
                    .join(format!("{}.log", container.unwrap_or_default()));
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                let text = match ctx.query.get("tailLines").and_then(|t| t.parse::<usize>().ok()) {
                    Some(n) => {
                        let lines: Vec<&str> = text.lines().collect();
                        lines[lines.len().saturating_sub(n)..].join("\n") + "\n"
                    }
                    None => text,
                };
                Ok((200, Value::String(text)))
            }
            _ => Ok((200, object)),
        }
    }

    fn matching(
        &self,
        target: &Target,
        query: &HashMap<String, String>,
    ) -> Result<Vec<Value>, ApiError> {
        let labels =
            Selector::parse(query.get("labelSelector").map(String::as_str).unwrap_or_default())
                .map_err(ApiError::bad_request)?;
        let fields =
            Selector::parse(query.get("fieldSelector").map(String::as_str).unwrap_or_default())
                .map_err(ApiError::bad_request)?;
        let mut items = self.store.list(&target.kind.resource(), target.namespace.as_deref());
        if target.kind.resource() == "/events" {
            // core/v1 and events.k8s.io/v1 Events are one object in two shapes.
            items.extend(
                self.store
                    .list("events.k8s.io/events", target.namespace.as_deref())
                    .iter()
                    .map(core_event),
            );
        }
        Ok(items
            .into_iter()
            .filter(|o| labels.matches(&o["metadata"]["labels"]) && fields.matches_fields(o))
            .collect())
    }

    fn list(&self, target: &Target, ctx: &Ctx) -> Result<(u16, Value), ApiError> {
        let rv = self.store.lock().resource_version().to_string();
        let items = self.matching(target, &ctx.query)?;
        let kind = self.current_kind(&target.kind);
        let list = match ctx.convert {
            Convert::Table => table(&kind, &items, &ctx.query, &rv),
            Convert::PartialObjectMetadataList => json!({
                "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                "metadata": {"resourceVersion": rv},
                "items": items.iter().map(partial_object_metadata).collect::<Vec<_>>(),
            }),
            Convert::PartialObjectMetadata => {
                return Err(ApiError::new(
                    406,
                    "NotAcceptable",
                    "you requested PartialObjectMetadata, but the requested object is a list",
                ));
            }
            Convert::None => json!({
                "apiVersion": kind.api_version(), "kind": format!("{}List", kind.kind),
                "metadata": {"resourceVersion": rv}, "items": items,
            }),
        };
        Ok((200, list))
    }

    fn watch(self: Arc<Self>, target: Target, ctx: Ctx) -> Response<Body> {
        let labels =
            Selector::parse(ctx.query.get("labelSelector").map(String::as_str).unwrap_or_default())
                .unwrap_or_default();
        let fields =
            Selector::parse(ctx.query.get("fieldSelector").map(String::as_str).unwrap_or_default())
                .unwrap_or_default();
        let bookmarks = ctx.query.get("allowWatchBookmarks").is_some_and(|v| v == "true");
        let timeout =
            ctx.query.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).unwrap_or(1800);
        let rv = ctx.query.get("resourceVersion").cloned().unwrap_or_default();
        let resource = target.kind.resource();
        let namespace = target.namespace.clone();
        let matches = move |object: &Value| {
            namespace.as_deref().is_none_or(|ns| store::namespace_of(object) == ns)
                && labels.matches(&object["metadata"]["labels"])
                && fields.matches_fields(object)
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
        let (initial, mut events, start_rv) = {
            let inner = self.store.lock();
            let events = self.store.subscribe();
            let current = inner.resource_version();
            let initial: Result<Vec<(String, Value)>, store::Error> = match rv.parse::<u64>() {
                Ok(from) if from > 0 => inner
                    .since(&resource, from)
                    .map(|evs| evs.into_iter().map(|e| (e.type_.to_owned(), e.object)).collect()),
                _ => Ok(inner
                    .list(&resource, None)
                    .into_iter()
                    .map(|o| ("ADDED".to_owned(), o))
                    .collect()),
            };
            (initial, events, current)
        };
        let epoch = self.faults.epoch.load(Ordering::SeqCst);
        let server = self.clone();
        let metadata_only = ctx.convert == Convert::PartialObjectMetadata;
        tokio::spawn(async move {
            // Each event's object converted as the client asked; an ERROR's Status never is.
            let send = |type_: &str, object: &Value| {
                let object = if metadata_only && type_ != "ERROR" {
                    partial_object_metadata(object)
                } else {
                    object.clone()
                };
                Bytes::from(format!("{}\n", json!({"type": type_, "object": object})))
            };
            let mut seen: HashSet<(String, String)> = HashSet::new();
            let initial = match initial {
                Ok(i) => i,
                Err(err) => {
                    let status = status_body(&ApiError::from(err));
                    let _ = tx.send(send("ERROR", &status)).await;
                    return;
                }
            };
            let forward = |type_: &str,
                           object: &Value,
                           seen: &mut HashSet<(String, String)>|
             -> Option<Bytes> {
                let key = (store::namespace_of(object), store::name_of(object));
                if matches(object) {
                    if type_ == "DELETED" {
                        seen.remove(&key);
                    } else {
                        seen.insert(key);
                    }
                    Some(send(type_, object))
                } else if seen.remove(&key) {
                    Some(send("DELETED", object))
                } else {
                    None
                }
            };
            for (type_, object) in &initial {
                if let Some(line) = forward(type_, object, &mut seen)
                    && tx.send(line).await.is_err()
                {
                    return;
                }
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
            let mut last_rv = start_rv;
            let kind_meta = (target.kind.api_version(), target.kind.kind.clone());
            loop {
                let next = tokio::time::timeout(Duration::from_secs(5), events.recv());
                let outcome = tokio::select! {
                    e = next => e,
                    _ = tokio::time::sleep_until(deadline) => return,
                };
                if server.faults.epoch.load(Ordering::SeqCst) != epoch {
                    return;
                }
                match outcome {
                    Ok(Ok(event)) => {
                        if event.resource != resource || event.rv <= start_rv {
                            continue;
                        }
                        last_rv = event.rv;
                        if let Some(line) = forward(event.type_, &event.object, &mut seen)
                            && tx.send(line).await.is_err()
                        {
                            return;
                        }
                    }
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => return,
                    Ok(Err(_)) => return,
                    Err(_) => {
                        if bookmarks {
                            let latest = server.store.lock().resource_version().max(last_rv);
                            let bookmark = json!({"apiVersion": kind_meta.0, "kind": kind_meta.1, "metadata": {"resourceVersion": latest.to_string()}});
                            if tx.send(send("BOOKMARK", &bookmark)).await.is_err() {
                                return;
                            }
                        } else if tx.is_closed() {
                            return;
                        }
                    }
                }
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|bytes| (Ok::<_, std::io::Error>(Frame::data(bytes)), rx))
        });
        let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        response
            .headers_mut()
            .insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
        response
    }

    fn parse_body(&self, ctx: &Ctx, body: &[u8]) -> Result<Value, ApiError> {
        if ctx.content_type.contains("yaml") {
            serde_yaml::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid YAML body: {e}")))
        } else {
            serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
        }
    }

    fn manager<'a>(
        &self,
        ctx: &'a Ctx,
        kind: &'a Kind,
        api_version: &'a str,
        sub: Option<&'a str>,
    ) -> Manager<'a> {
        Manager {
            name: ctx
                .query
                .get("fieldManager")
                .map(String::as_str)
                .unwrap_or(&ctx.field_manager_default),
            api_version,
            subresource: sub,
            part: if sub == Some("status") {
                Part::Status
            } else {
                Part::Main { status_separate: kind.status }
            },
        }
    }

    async fn create(&self, target: &Target, ctx: &Ctx, body: &[u8]) -> Result<Value, ApiError> {
        let mut object = self.parse_body(ctx, body)?;
        if !object.is_object() {
            return Err(ApiError::bad_request("the body must be an object"));
        }
        if let Some(ns) = &target.namespace {
            let given = store::namespace_of(&object);
            if !given.is_empty() && given != *ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            object["metadata"]["namespace"] = json!(ns);
        }
        if store::name_of(&object).is_empty() {
            match object["metadata"]["generateName"].as_str() {
                Some(prefix) => {
                    object["metadata"]["name"] = json!(format!("{prefix}{}", &store::uid()[..5]))
                }
                None => {
                    return Err(ApiError::invalid(
                        &target.kind,
                        "",
                        &["metadata.name: Required value: name or generateName is required".into()],
                    ));
                }
            }
        }
        let kind = self.current_kind(&target.kind);
        let api_version = kind.api_version();
        patch::record_update(None, &mut object, &self.manager(ctx, &kind, &api_version, None));
        let admitted =
            admission::admit(self, &kind, Operation::Create, None, object, &ctx.user).await?;
        if ctx.query.contains_key("dryRun") {
            return Ok(admitted);
        }
        let created = self.store.create(&kind, admitted)?;
        Ok(created)
    }

    async fn update(&self, target: &Target, ctx: &Ctx, body: &[u8]) -> Result<Value, ApiError> {
        let new = self.parse_body(ctx, body)?;
        let current = self.current(target)?;
        if target.subresource.as_deref() == Some("scale") {
            let replicas = new["spec"]["replicas"].clone();
            return self.scale(target, ctx, current, replicas).await;
        }
        self.write(target, ctx, current, new, true).await
    }

    fn current(&self, target: &Target) -> Result<Value, ApiError> {
        let name = target.name.clone().unwrap_or_default();
        self.store
            .get(&target.kind.resource(), target.namespace.as_deref().unwrap_or_default(), &name)
            .ok_or_else(|| {
                store::Error::NotFound { resource: target.kind.resource_name(), name }.into()
            })
    }

    /// Writes `new` over `current` through the subresource rules and admission.
    async fn write(
        &self,
        target: &Target,
        ctx: &Ctx,
        current: Value,
        mut new: Value,
        record: bool,
    ) -> Result<Value, ApiError> {
        let kind = self.current_kind(&target.kind);
        match target.subresource.as_deref() {
            Some("status") => {
                // The status endpoint changes status only.
                let status = new.get("status").cloned();
                let rv = new["metadata"]["resourceVersion"].clone();
                let managed = new["metadata"]["managedFields"].clone();
                new = current.clone();
                if !managed.is_null() {
                    new["metadata"]["managedFields"] = managed;
                }
                match status {
                    Some(s) => new["status"] = s,
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                if !rv.is_null() {
                    new["metadata"]["resourceVersion"] = rv;
                }
            }
            _ if kind.status => match current.get("status") {
                // The main endpoint of a kind with a status subresource ignores status.
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            },
            _ => {}
        }
        new["metadata"]["namespace"] = current["metadata"]["namespace"].clone();
        new["metadata"]["name"] = current["metadata"]["name"].clone();
        if new["metadata"]["managedFields"].is_null() {
            new["metadata"]["managedFields"] = current["metadata"]["managedFields"].clone();
        }
        if record {
            let api_version = kind.api_version();
            patch::record_update(
                Some(&current),
                &mut new,
                &self.manager(ctx, &kind, &api_version, target.subresource.as_deref()),
            );
        }
        let admitted = if target.subresource.is_some() {
            admission::builtin_checks(&kind, Some(&current), &new)?;
            new
        } else {
            admission::admit(self, &kind, Operation::Update, Some(&current), new, &ctx.user).await?
        };
        if ctx.query.contains_key("dryRun") {
            return Ok(admitted);
        }
        Ok(self.store.update(&kind, admitted)?)
    }

    async fn scale(
        &self,
        target: &Target,
        ctx: &Ctx,
        current: Value,
        replicas: Value,
    ) -> Result<Value, ApiError> {
        let kind = self.current_kind(&target.kind);
        let Some(scale) = &kind.scale else {
            return Err(ApiError::bad_request("no scale subresource"));
        };
        if !replicas.is_i64() {
            return Err(ApiError::invalid(
                &kind,
                &store::name_of(&current),
                &["spec.replicas: Required value".into()],
            ));
        }
        let mut new = current.clone();
        resources::set_json_path(&mut new, &scale.spec_replicas, replicas);
        let main = Target { subresource: None, ..target.clone() };
        // Through the main resource's admission, as kube-apiserver's scale storage updates it.
        let updated = self.write(&main, ctx, current, new, true).await?;
        Ok(scale_of(&kind, &updated))
    }

    /// kube-apiserver applies a patch inside its storage's GuaranteedUpdate: when the object
    /// changed between the read and the write (another writer got in while admission ran), it
    /// reads the object again and applies the patch again (`applyPatch` in the apiserver's
    /// handlers/patch.go is "called every time GuaranteedUpdate asks for the updated object").
    /// Only a patch that names a resourceVersion gets a Conflict.
    async fn patch(
        &self,
        target: &Target,
        ctx: &Ctx,
        body: &[u8],
    ) -> Result<(u16, Value), ApiError> {
        let patch_body = self.parse_body(ctx, body)?;
        let unconditional = patch_body["metadata"]["resourceVersion"].is_null();
        let mut tries = 1;
        loop {
            match self.patch_once(target, ctx, &patch_body).await {
                Err(err) if err.stale && unconditional && tries < PATCH_TRIES => tries += 1,
                result => return result,
            }
        }
    }

    async fn patch_once(
        &self,
        target: &Target,
        ctx: &Ctx,
        patch_body: &Value,
    ) -> Result<(u16, Value), ApiError> {
        let kind = self.current_kind(&target.kind);
        let name = target.name.clone().unwrap_or_default();
        let existing = self.store.get(
            &kind.resource(),
            target.namespace.as_deref().unwrap_or_default(),
            &name,
        );
        if ctx.content_type.starts_with("application/apply-patch") {
            let api_version = kind.api_version();
            let manager = ctx.query.get("fieldManager").map(String::as_str).unwrap_or_default();
            if manager.is_empty() {
                return Err(ApiError::bad_request(
                    "PATCH, application/apply-patch+yaml, fieldManager is required",
                ));
            }
            let force = ctx.query.get("force").is_some_and(|f| f == "true");
            let mut applied = patch_body.clone();
            if let Some(ns) = &target.namespace {
                applied["metadata"]["namespace"] = json!(ns);
            }
            let field_manager =
                self.manager(ctx, &kind, &api_version, target.subresource.as_deref());
            let merged = patch::apply(existing.as_ref(), &applied, &field_manager, force)
                .map_err(|message| ApiError::new(409, "Conflict", message))?;
            return match existing {
                None if target.subresource.is_none() => {
                    let admitted =
                        admission::admit(self, &kind, Operation::Create, None, merged, &ctx.user)
                            .await?;
                    if ctx.query.contains_key("dryRun") {
                        return Ok((201, admitted));
                    }
                    Ok((201, self.store.create(&kind, admitted)?))
                }
                None => Err(store::Error::NotFound { resource: kind.resource_name(), name }.into()),
                Some(current) => {
                    let mut merged = merged;
                    merged["metadata"]["resourceVersion"] = version_to_write(patch_body, &current);
                    // Field ownership is already recorded as apply computed it.
                    Ok((200, self.write(target, ctx, current, merged, false).await?))
                }
            };
        }
        let current = existing.ok_or_else(|| {
            ApiError::from(store::Error::NotFound { resource: kind.resource_name(), name })
        })?;
        if target.subresource.as_deref() == Some("scale") {
            let mut scale = scale_of(&kind, &current);
            apply_patch(&ctx.content_type, &mut scale, patch_body)?;
            let replicas = scale["spec"]["replicas"].clone();
            return self.scale(target, ctx, current, replicas).await.map(|v| (200, v));
        }
        let mut new = current.clone();
        apply_patch(&ctx.content_type, &mut new, patch_body)?;
        new["metadata"]["resourceVersion"] = version_to_write(patch_body, &current);
        self.write(target, ctx, current, new, true).await.map(|v| (200, v))
    }

    async fn delete(&self, target: &Target, ctx: &Ctx, body: &[u8]) -> Result<Value, ApiError> {
        let options: Value = if body.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(body).unwrap_or_else(|_| json!({}))
        };
        let current = self.current(target)?;
        if let Some(uid) = options["preconditions"]["uid"].as_str()
            && current["metadata"]["uid"].as_str() != Some(uid)
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    current["metadata"]["uid"].as_str().unwrap_or_default()
                ),
            ));
        }
        let grace = options["gracePeriodSeconds"]
            .as_i64()
            .or_else(|| ctx.query.get("gracePeriodSeconds").and_then(|g| g.parse().ok()));
        let kind = self.current_kind(&target.kind);
        admission::on_delete(self, &kind, &current, &ctx.user).await?;
        if ctx.query.contains_key("dryRun") {
            return Ok(current);
        }
        let name = store::name_of(&current);
        let namespace = store::namespace_of(&current);
        if options["propagationPolicy"] == "Orphan" {
            crate::controllers::orphan(
                &self.store,
                current["metadata"]["uid"].as_str().unwrap_or_default(),
            );
        }
        // Pods on a node end gracefully; a grace period of 0 removes one at once (a force delete).
        Ok(self.store.delete_as_requested(&kind, &namespace, &name, grace)?)
    }

    async fn delete_collection(
        &self,
        target: &Target,
        ctx: &Ctx,
        body: &[u8],
    ) -> Result<Value, ApiError> {
        let items = self.matching(target, &ctx.query)?;
        let mut deleted = Vec::new();
        for item in items {
            let one = Target { name: Some(store::name_of(&item)), ..target.clone() };
            deleted.push(self.delete(&one, ctx, body).await?);
        }
        let kind = self.current_kind(&target.kind);
        Ok(
            json!({"apiVersion": kind.api_version(), "kind": format!("{}List", kind.kind), "metadata": {}, "items": deleted}),
        )
    }
}

struct Ctx {
    user: User,
    query: HashMap<String, String>,
    content_type: String,
    field_manager_default: String,
    convert: Convert,
}

/// The resourceVersion a patch is written at: the one it names (a precondition), else that of
/// the object it was applied to, so that a write that lost a race is refused and applied again.
fn version_to_write(patch_body: &Value, current: &Value) -> Value {
    match &patch_body["metadata"]["resourceVersion"] {
        Value::Null => current["metadata"]["resourceVersion"].clone(),
        named => named.clone(),
    }
}

fn apply_patch(content_type: &str, target: &mut Value, body: &Value) -> Result<(), ApiError> {
    if content_type.starts_with("application/json-patch+json") {
        patch::json_patch(target, body).map_err(|e| ApiError::new(422, "Invalid", e))
    } else if content_type.starts_with("application/strategic-merge-patch+json") {
        patch::strategic_merge(target, body);
        Ok(())
    } else if content_type.starts_with("application/merge-patch+json") {
        patch::merge_patch(target, body);
        Ok(())
    } else {
        Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json; got {content_type}"
            ),
        ))
    }
}

fn group_value(name: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": versions.clone(), "preferredVersion": versions.first()})
}

fn scale_of(kind: &Kind, object: &Value) -> Value {
    let Some(scale) = &kind.scale else { return Value::Null };
    let spec = resources::json_path(object, &scale.spec_replicas).cloned().unwrap_or(json!(0));
    let status = resources::json_path(object, &scale.status_replicas).cloned().unwrap_or(json!(0));
    let selector = match &scale.label_selector {
        Some(path) => resources::json_path(object, path).cloned().unwrap_or(json!("")),
        None => {
            json!(
                object["spec"]["selector"]["matchLabels"]
                    .as_object()
                    .map(|m| m
                        .iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(","))
                    .unwrap_or_default()
            )
        }
    };
    json!({
        "apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": object["metadata"]["name"], "namespace": object["metadata"]["namespace"], "uid": object["metadata"]["uid"], "resourceVersion": object["metadata"]["resourceVersion"], "creationTimestamp": object["metadata"]["creationTimestamp"]},
        "spec": {"replicas": spec},
        "status": {"replicas": status, "selector": selector},
    })
}

/// An events.k8s.io/v1 Event as core/v1 shows it (what `kubectl describe` lists).
fn core_event(event: &Value) -> Value {
    let mut core = event.clone();
    core["apiVersion"] = json!("v1");
    core["involvedObject"] = event["regarding"].clone();
    core["message"] = event["note"].clone();
    core["source"] = json!({"component": event["reportingController"]});
    core["firstTimestamp"] = event["eventTime"].clone();
    core["lastTimestamp"] = event["series"]["lastObservedTime"]
        .as_str()
        .map(|t| json!(t))
        .unwrap_or_else(|| event["eventTime"].clone());
    core["count"] = json!(event["series"]["count"].as_i64().unwrap_or(1));
    core
}

/// kube-apiserver's age format (`k8s.io/apimachinery/pkg/util/duration.HumanDuration`).
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => {
            if s % 60 == 0 {
                format!("{}m", s / 60)
            } else {
                format!("{}m{}s", s / 60, s % 60)
            }
        }
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 8 * 3600 => {
            let m = (s % 3600) / 60;
            if m == 0 { format!("{}h", s / 3600) } else { format!("{}h{m}m", s / 3600) }
        }
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn age(timestamp: &Value) -> Value {
    let Some(text) = timestamp.as_str() else { return json!("<unknown>") };
    let parsed = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339);
    match parsed {
        Ok(t) => json!(human_duration((time::OffsetDateTime::now_utc() - t).whole_seconds())),
        Err(_) => json!("<unknown>"),
    }
}

/// What a client asked the answer to be converted into: the `as=` of its Accept header
/// (kube-apiserver's `targetEncodingForTransform` and `doTransformObject`, in
/// staging/src/k8s.io/apiserver/pkg/endpoints/handlers/response.go). kube-runtime's `owns` and
/// metadata watchers ask for PartialObjectMetadata: an API server that sent whole objects would
/// make them read Secrets' contents they never asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Convert {
    None,
    Table,
    PartialObjectMetadata,
    PartialObjectMetadataList,
}

impl Convert {
    fn of(accept: &str) -> Self {
        // The first type of the header that asks for a conversion in meta.k8s.io wins, as the
        // API server tries them in the client's order.
        for media in accept.split(',') {
            let params: Vec<&str> = media.split(';').map(str::trim).collect();
            if !params.contains(&"g=meta.k8s.io") {
                continue;
            }
            match params.iter().find_map(|p| p.strip_prefix("as=")) {
                Some("Table") => return Self::Table,
                Some("PartialObjectMetadata") => return Self::PartialObjectMetadata,
                Some("PartialObjectMetadataList") => return Self::PartialObjectMetadataList,
                _ => {}
            }
        }
        Self::None
    }
}

/// An object reduced to its metadata (`meta.AsPartialObjectMetadata`); a Status stays whole.
fn partial_object_metadata(object: &Value) -> Value {
    if object["kind"] == "Status" {
        return object.clone();
    }
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": object["metadata"]})
}

/// A meta.k8s.io/v1 Table of `items` with the kind's printer columns.
fn table(kind: &Kind, items: &[Value], query: &HashMap<String, String>, rv: &str) -> Value {
    let mut columns = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}),
    ];
    let pod_columns = kind.resource() == "/pods";
    if pod_columns {
        for (name, type_) in [
            ("Ready", "string"),
            ("Status", "string"),
            ("Restarts", "string"),
            ("Age", "string"),
            ("IP", "string"),
        ] {
            columns.push(json!({"name": name, "type": type_, "format": "", "description": name, "priority": if name == "IP" { 1 } else { 0 }}));
        }
    } else if kind.columns.is_empty() {
        columns.push(json!({"name": "Age", "type": "date", "format": "", "description": "Age", "priority": 0}));
    } else {
        for c in &kind.columns {
            columns.push(json!({"name": c.name, "type": c.type_, "format": "", "description": c.name, "priority": 0}));
        }
    }
    let include_object = query.get("includeObject").map(String::as_str) == Some("Object");
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let mut cells = vec![item["metadata"]["name"].clone()];
            if pod_columns {
                cells.extend(pod_cells(item));
            } else if kind.columns.is_empty() {
                cells.push(age(&item["metadata"]["creationTimestamp"]));
            } else {
                for c in &kind.columns {
                    let value =
                        resources::json_path(item, &c.json_path).cloned().unwrap_or(Value::Null);
                    cells.push(if c.type_ == "date" { age(&value) } else { value });
                }
            }
            let object = if include_object { item.clone() } else { partial_object_metadata(item) };
            json!({"cells": cells, "object": object})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv}, "columnDefinitions": columns, "rows": rows})
}

fn pod_cells(pod: &Value) -> Vec<Value> {
    let statuses = pod["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
    let total = pod["spec"]["containers"].as_array().map_or(0, Vec::len);
    let ready = statuses.iter().filter(|s| s["ready"] == true).count();
    let restarts: i64 = statuses.iter().map(|s| s["restartCount"].as_i64().unwrap_or(0)).sum();
    let mut reason = pod["status"]["phase"].as_str().unwrap_or("Pending").to_owned();
    let init = pod["status"]["initContainerStatuses"].as_array().cloned().unwrap_or_default();
    for (i, s) in init.iter().enumerate() {
        if s["state"]["terminated"]["exitCode"] == 0 {
            continue;
        }
        if let Some(r) =
            s["state"]["waiting"]["reason"].as_str().filter(|r| *r != "PodInitializing")
        {
            reason = format!("Init:{r}");
        } else {
            reason = format!("Init:{i}/{}", init.len());
        }
        break;
    }
    for s in &statuses {
        if let Some(r) = s["state"]["waiting"]["reason"].as_str() {
            reason = r.to_owned();
        } else if let Some(r) = s["state"]["terminated"]["reason"].as_str() {
            reason = r.to_owned();
        }
    }
    if !pod["metadata"]["deletionTimestamp"].is_null() {
        reason = "Terminating".into();
    }
    vec![
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts.to_string()),
        age(&pod["metadata"]["creationTimestamp"]),
        pod["status"]["podIP"].clone(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_header_names_the_conversion_as_clients_send_it() {
        // kubectl get
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(Convert::of(kubectl), Convert::Table);
        // kube-runtime's metadata watches and lists
        let watch = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
        assert_eq!(Convert::of(watch), Convert::PartialObjectMetadata);
        let list = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
        assert_eq!(Convert::of(list), Convert::PartialObjectMetadataList);
        assert_eq!(Convert::of("application/json, */*"), Convert::None);
        // Only meta.k8s.io's kinds convert.
        assert_eq!(Convert::of("application/json;as=Table;g=example.com;v=v1"), Convert::None);
    }

    #[test]
    fn an_object_reduced_to_metadata_keeps_all_of_it_and_a_status_stays_whole() {
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "resourceVersion": "7", "ownerReferences": [{"uid": "u"}]}, "data": {"tls.key": "c2VjcmV0"}});
        let partial = partial_object_metadata(&secret);
        assert_eq!(partial["kind"], "PartialObjectMetadata");
        assert_eq!(partial["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(partial["metadata"], secret["metadata"]);
        assert!(partial.get("data").is_none());
        let status =
            json!({"kind": "Status", "apiVersion": "v1", "code": 410, "reason": "Expired"});
        assert_eq!(partial_object_metadata(&status), status);
    }
}
