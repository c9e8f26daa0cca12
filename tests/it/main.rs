//! The integration tests: one binary (one link), with modules by area. Each test runs against
//! real parts (etcd processes, the HTTPS server, an S3 server, kubectl, the rendered manifests)
//! or, for controllers, a scripted API server that checks every request.

mod support;

mod architecture;
mod cli;
mod hardening;
mod controller {
    mod backup;
    mod cluster;
    mod deletion;
    mod leader;
    mod restore;
}
mod membership {
    mod crash;
    mod etcd_health;
    mod linearizability;
    mod local_admission;
    mod local_metrics;
    mod local_restore;
    mod recovery;
    mod replace;
    mod scaling;
    mod unreachable;
    mod upgrade;
}
mod tls {
    mod etcd_auth;
    mod etcd_mtls;
    mod no_key_leak;
    mod peer_pinning;
    mod secrets;
    mod webhook_rotation;
}
mod webhook {
    mod https;
    mod slow_clients;
}
mod backup {
    mod bounds;
    mod restore;
    mod tenant_access;
}
mod kube {
    mod api_client;
    mod chart;
    mod dockerfile;
    mod manifests;
    mod members;
    mod monitoring;
    mod objects;
}
