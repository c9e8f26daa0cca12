//! The Kubernetes objects of one EtcdCluster, as pure functions of it. Each is owned by the
//! EtcdCluster (garbage-collected with it) and applied with server-side apply.

use std::collections::BTreeMap;

use etcd_certs::PkiPart;
use etcd_crds::EtcdCluster;
use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort,
    EmptyDirVolumeSource, EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecretEnvSource,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec,
    TCPSocketAction, TopologySpreadConstraint, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;

use super::bootstrap::BootstrapEntry;
use crate::names::{self, *};

/// Metadata of an object of `cluster`: name, namespace, labels and the controller reference.
fn meta(cluster: &EtcdCluster, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace(cluster)),
        labels: Some(labels(&crate::names::name(cluster))),
        owner_references: cluster
            .controller_owner_ref(&())
            .map(|owner: OwnerReference| vec![owner]),
        ..ObjectMeta::default()
    }
}

fn port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port,
        target_port: Some(IntOrString::Int(port)),
        ..ServicePort::default()
    }
}

/// The headless Service that gives each member its peer DNS name. Addresses are published before
/// pods are ready: members must find each other to become ready at all.
pub fn headless_service(cluster: &EtcdCluster) -> Service {
    let name = crate::names::name(cluster);
    Service {
        metadata: meta(cluster, etcd_certs::cluster::peer_service(&name)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector(&name)),
            ports: Some(vec![port("peer", PEER_PORT), port("client", CLIENT_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The Service clients use: ready members only.
pub fn client_service(cluster: &EtcdCluster) -> Service {
    let name = crate::names::name(cluster);
    Service {
        metadata: meta(cluster, etcd_certs::cluster::client_service(&name)),
        spec: Some(ServiceSpec {
            selector: Some(selector(&name)),
            ports: Some(vec![port("client", CLIENT_PORT), port("metrics", METRICS_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// At most one member down through voluntary disruption (drains): with an odd size that always
/// leaves a quorum, and it is what the operator itself does when it rolls members.
pub fn pod_disruption_budget(cluster: &EtcdCluster) -> PodDisruptionBudget {
    let name = crate::names::name(cluster);
    PodDisruptionBudget {
        metadata: meta(cluster, name.clone()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector(&name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

/// The bootstrap entries of the members admitted so far.
pub fn bootstrap_configmap(cluster: &EtcdCluster, entries: &[BootstrapEntry]) -> ConfigMap {
    let data: BTreeMap<String, String> = entries
        .iter()
        .map(|entry| {
            (BootstrapEntry::key(&entry.name), serde_json::to_string(entry).unwrap_or_default())
        })
        .collect();
    ConfigMap {
        metadata: meta(cluster, names::bootstrap_configmap(&crate::names::name(cluster))),
        data: Some(data),
        ..ConfigMap::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    }
}

fn secret_volume(name: &str, secret: String) -> Volume {
    Volume {
        name: name.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret),
            default_mode: Some(0o400),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn restricted() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

/// Whether this etcd serves `/readyz` and `/livez` (3.5.11 and later, 3.6).
fn has_readyz(version: &str) -> bool {
    version
        .parse::<etcd_crds::version::EtcdVersion>()
        .is_ok_and(|v| v >= etcd_crds::version::EtcdVersion { major: 3, minor: 5, patch: 11 })
}

fn http_probe(path: &str, period: i32, timeout: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(METRICS_PORT),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(timeout),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// Ready when this member serves linearizable reads (a quorum) — but not held unready by a
/// NOSPACE alarm: that would empty the client Service exactly when clients must compact and
/// defragment, and block every drain. `/readyz` (3.5.11+, 3.6) ignores NOSPACE and keeps
/// learners out of the Service; older versions get `/health?exclude=NOSPACE`. A timeout of
/// several seconds: a member busy with a large compaction is slow, not gone.
fn readiness_probe(version: &str) -> Probe {
    let path = if has_readyz(version) { "/readyz" } else { "/health?exclude=NOSPACE" };
    http_probe(path, 5, 5, 3)
}

/// Alive while it answers serializable reads (`/livez`, no quorum needed) or, before 3.5.11,
/// while it listens: a cluster without quorum is not made worse by restarts.
fn liveness_probe(version: &str) -> Probe {
    let mut probe = if has_readyz(version) {
        http_probe("/livez", 10, 5, 6)
    } else {
        Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(CLIENT_PORT),
                ..TCPSocketAction::default()
            }),
            period_seconds: Some(10),
            timeout_seconds: Some(5),
            failure_threshold: Some(6),
            ..Probe::default()
        }
    };
    probe.initial_delay_seconds = Some(15);
    probe
}

/// By default no two members of a cluster share a node: losing one node must never cost a
/// quorum. Required anti-affinity rather than a `DoNotSchedule` hostname spread, because a spread
/// of skew 1 still puts two of three members on one node when there are two nodes; with
/// anti-affinity the third member stays Pending, which is reported, instead of sharing. The
/// scheduler's own default spreading is soft (`ScheduleAnyway`), so without this two members
/// can share a node. `podTemplate.affinity` replaces it.
fn spread_over_nodes(cluster: &str) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                label_selector: Some(LabelSelector {
                    match_labels: Some(selector(cluster)),
                    ..LabelSelector::default()
                }),
                topology_key: "kubernetes.io/hostname".into(),
                ..PodAffinityTerm::default()
            }]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

/// Members spread over zones where the cluster has them (preferred: a cluster in one zone, or
/// with fewer zones than members, still schedules). `podTemplate.topologySpreadConstraints`
/// replaces it.
fn spread_over_zones(cluster: &str) -> Vec<TopologySpreadConstraint> {
    vec![TopologySpreadConstraint {
        max_skew: 1,
        topology_key: "topology.kubernetes.io/zone".into(),
        when_unsatisfiable: "ScheduleAnyway".into(),
        label_selector: Some(LabelSelector {
            match_labels: Some(selector(cluster)),
            ..LabelSelector::default()
        }),
        ..TopologySpreadConstraint::default()
    }]
}

/// What outside the spec the members run with, and must be restarted to pick up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestartFor {
    /// The fingerprint of the CA bundle the members must load: etcd reads its trusted CAs only
    /// at start.
    pub trust: Option<String>,
    /// The storage size whose file system growth waits for the pods to start again.
    pub filesystem_resize: Option<String>,
}

/// The members' StatefulSet. `replicas` is the number of ordinals admitted (members and the
/// learner in flight), not `spec.size`: a pod exists only for a member etcd knows about.
/// `restart` says what the members must be restarted for, each a change of the template that
/// rolls the pods. The rolling update is held by a partition the roll sets ([`super::roll`],
/// which reads the template's fingerprint this StatefulSet carries).
pub fn statefulset(
    cluster: &EtcdCluster,
    replicas: i32,
    operator_image: &str,
    restart: &RestartFor,
) -> StatefulSet {
    let name = crate::names::name(cluster);
    let spec = &cluster.spec;
    let tls = spec.security.tls.enabled;
    let overrides = &spec.pod_template;
    // The selector's labels last: an override (admitted before the webhook refused them) never
    // moves a member out of its cluster or into another's.
    let mut pod_labels = overrides.labels.clone();
    pod_labels.extend(selector(&name));
    let mut pod_annotations = overrides.annotations.clone();
    if let Some(fingerprint) = &restart.trust {
        pod_annotations.insert(names::TRUST_BUNDLE_ANNOTATION.to_owned(), fingerprint.clone());
    }
    if let Some(size) = &restart.filesystem_resize {
        pod_annotations.insert(names::FILESYSTEM_RESIZE_ANNOTATION.to_owned(), size.clone());
    }
    let secret = |part: PkiPart, user: &Option<etcd_crds::SecretReference>| {
        user.as_ref().map(|s| s.name.clone()).unwrap_or_else(|| part.secret_name(&name))
    };
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
        Volume {
            name: "bootstrap".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names::bootstrap_configmap(&name),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        // Made at the cluster's first recovery (before any entry needs it), so optional: a
        // cluster that never lost its quorum has none.
        Volume {
            name: "seal".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names::seal_secret(&name)),
                default_mode: Some(0o400),
                optional: Some(true),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
    ];
    let mut etcd_mounts =
        vec![mount("config", CONFIG_DIR, true), mount(DATA_VOLUME, DATA_MOUNT, false)];
    if tls {
        volumes.push(secret_volume(
            "peer-tls",
            secret(PkiPart::Peer, &spec.security.tls.peer_secret_ref),
        ));
        volumes.push(secret_volume(
            "server-tls",
            secret(PkiPart::Server, &spec.security.tls.server_secret_ref),
        ));
        etcd_mounts.push(mount("peer-tls", PEER_TLS_DIR, true));
        etcd_mounts.push(mount("server-tls", SERVER_TLS_DIR, true));
    }
    let claims = if spec.storage.ephemeral {
        volumes.push(Volume {
            name: DATA_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        });
        None
    } else {
        Some(vec![PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(DATA_VOLUME.into()),
                labels: Some(selector(&name)),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: spec.storage.storage_class_name.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([("storage".into(), spec.storage.size.clone())])),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            ..PersistentVolumeClaim::default()
        }])
    };
    let pod_name = EnvVar {
        name: "POD_NAME".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let mut init_args = vec![
        "member-init".into(),
        format!("--cluster={name}"),
        format!("--namespace={}", namespace(cluster)),
        format!("--tls={tls}"),
        format!("--bootstrap-dir={BOOTSTRAP_DIR}"),
        format!("--config-out={CONFIG_FILE}"),
        format!("--options={}", serde_json::to_string(&spec.options).unwrap_or_default()),
        format!("--data-dir={DATA_DIR}"),
        format!("--seal-dir={SEAL_DIR}"),
    ];
    if tls && spec.security.tls.auto_tls {
        // The operator issued the peer certificate, so it knows its name; a user's may differ.
        init_args
            .push(format!("--peer-common-name={}", etcd_certs::cluster::peer_common_name(&name)));
    }
    // The data volume: a restore writes there, and recovery's one-shot marker lives there.
    let init_mounts = vec![
        mount("bootstrap", BOOTSTRAP_DIR, true),
        mount("config", CONFIG_DIR, false),
        mount(DATA_VOLUME, DATA_MOUNT, false),
        mount("seal", SEAL_DIR, true),
    ];
    let mut init_env_from = None;
    let mut init_env = vec![pod_name.clone()];
    if let Some(restore) = &spec.restore {
        // A member of a new cluster fetches, verifies and restores the snapshot into the data
        // volume before etcd starts; credentials come from the location's Secret as the
        // backend's environment variables.
        init_args.push(format!("--restore={}", serde_json::to_string(restore).unwrap_or_default()));
        if let Some(encryption) = &restore.encryption {
            let reference = &encryption.key_secret_ref;
            init_env.push(EnvVar {
                name: crate::backup::encrypt::KEY_ENV.into(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: reference.name.clone(),
                        key: reference.key.clone(),
                        optional: Some(false),
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            });
        }
        init_env_from = restore.credentials_secret_ref.as_ref().map(|secret| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: secret.name.clone(),
                    optional: Some(false),
                }),
                ..EnvFromSource::default()
            }]
        });
    }
    let member_init = Container {
        name: "member-init".into(),
        image: Some(operator_image.to_owned()),
        args: Some(init_args),
        env: Some(init_env),
        env_from: init_env_from,
        volume_mounts: Some(init_mounts),
        security_context: Some(restricted()),
        // What etcd gets: a namespace with a ResourceQuota admits no pod with a container that
        // names no resources, and an init container's resources do not add to the pod's (the
        // pod's request is the larger of its init containers' and the sum of its containers').
        resources: Some(spec.resources.clone()),
        ..Container::default()
    };
    let etcd = Container {
        name: "etcd".into(),
        image: Some(format!("{}:v{}", spec.repository, spec.version)),
        command: Some(vec!["/usr/local/bin/etcd".into(), format!("--config-file={CONFIG_FILE}")]),
        ports: Some(vec![
            ContainerPort {
                name: Some("client".into()),
                container_port: CLIENT_PORT,
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("peer".into()),
                container_port: PEER_PORT,
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("metrics".into()),
                container_port: METRICS_PORT,
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(readiness_probe(&spec.version)),
        liveness_probe: Some(liveness_probe(&spec.version)),
        resources: Some(spec.resources.clone()),
        volume_mounts: Some(etcd_mounts),
        security_context: Some(restricted()),
        ..Container::default()
    };
    let pod_spec = PodSpec {
        init_containers: Some(vec![member_init]),
        containers: vec![etcd],
        volumes: Some(volumes),
        affinity: Some(overrides.affinity.clone().unwrap_or_else(|| spread_over_nodes(&name))),
        tolerations: (!overrides.tolerations.is_empty()).then(|| overrides.tolerations.clone()),
        node_selector: (!overrides.node_selector.is_empty())
            .then(|| overrides.node_selector.clone()),
        topology_spread_constraints: Some(if overrides.topology_spread_constraints.is_empty() {
            spread_over_zones(&name)
        } else {
            overrides.topology_spread_constraints.clone()
        }),
        priority_class_name: overrides.priority_class_name.clone(),
        image_pull_secrets: (!overrides.image_pull_secrets.is_empty())
            .then(|| overrides.image_pull_secrets.clone()),
        service_account_name: overrides.service_account_name.clone(),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            run_as_group: Some(65532),
            fs_group: Some(65532),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        // etcd flushes on SIGTERM; give a large database time to close cleanly.
        termination_grace_period_seconds: Some(60),
        // Neither etcd nor member-init talks to the Kubernetes API.
        automount_service_account_token: Some(false),
        ..PodSpec::default()
    };
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: (!pod_annotations.is_empty()).then_some(pod_annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(pod_spec),
    };
    let mut metadata = meta(cluster, name.clone());
    metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(names::TEMPLATE_HASH_ANNOTATION.to_owned(), super::roll::template_hash(&template));
    StatefulSet {
        metadata,
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(etcd_certs::cluster::peer_service(&name)),
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateStatefulSetStrategy {
                    partition: Some(0),
                    ..RollingUpdateStatefulSetStrategy::default()
                }),
            }),
            selector: LabelSelector {
                match_labels: Some(selector(&name)),
                ..LabelSelector::default()
            },
            volume_claim_templates: claims,
            template,
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

/// Every object of `cluster` as it is applied (k8s-openapi writes apiVersion and kind).
pub fn all(
    cluster: &EtcdCluster,
    replicas: i32,
    operator_image: &str,
    entries: &[BootstrapEntry],
) -> Vec<serde_json::Value> {
    [
        serde_json::to_value(headless_service(cluster)),
        serde_json::to_value(client_service(cluster)),
        serde_json::to_value(pod_disruption_budget(cluster)),
        serde_json::to_value(bootstrap_configmap(cluster, entries)),
        serde_json::to_value(statefulset(
            cluster,
            replicas,
            operator_image,
            &RestartFor::default(),
        )),
    ]
    .into_iter()
    .filter_map(Result::ok)
    .collect()
}
