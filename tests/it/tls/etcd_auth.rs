//! Every certificate the cluster's CA signs is let in at the client port, and until etcd's own
//! authentication is on each acts as root. With it on, etcd names the client by its certificate's
//! common name, so the user certificate the operator issues (`NAME-user`) can be given a role
//! that etcd's RBAC restricts, as the README's security model tells. The operator's identity
//! (`etcd-operator`) keeps the root role and runs the cluster as before: this test does what
//! the README says, then scales the cluster under authentication.

use std::time::Duration;

use etcd_client::{Permission, UserAddOptions};
use etcd_operator::etcd::ClientTls;

use crate::support::local::{Local, release_flag};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_auth_on_the_user_certificate_is_held_to_its_role_and_the_operator_runs_on() {
    let request = etcd_certs::ClusterPkiRequest {
        cluster: "it".into(),
        namespace: "default".into(),
        max_members: etcd_crds::MAX_MEMBERS,
        extra_sans: vec!["127.0.0.1".into(), "localhost".into()],
    };
    let pki = etcd_certs::issue_cluster_pki(&request, time::OffsetDateTime::now_utc()).unwrap();
    let flag = release_flag("3.5.36");
    let mut local = Local::start_with_pki("3.5.36", 3, &[&flag], &pki);
    let status = local.wait_running(3, Duration::from_secs(60)).await;
    let endpoints = status.client_endpoints.clone();
    let operator = local.tls();
    let user = ClientTls {
        ca_pem: pki.ca.cert_pem.clone(),
        cert_pem: pki.user_client.cert_pem.clone(),
        key_pem: pki.user_client.key_pem.clone(),
    };

    // The README's steps, as etcd's API takes them (etcdctl user add --no-password, ...).
    let mut admin = etcd_operator::etcd::connect(&endpoints, Some(&operator)).await.unwrap();
    let no_password = || Some(UserAddOptions::new().with_no_pwd());
    for name in ["root", "etcd-operator"] {
        admin.user_add(name, "", no_password()).await.unwrap();
        admin.user_grant_role(name, "root").await.unwrap();
    }
    admin.role_add("app").await.unwrap();
    admin.role_grant_permission("app", Permission::read_write("app/").with_prefix()).await.unwrap();
    admin.user_add("it-user", "", no_password()).await.unwrap();
    admin.user_grant_role("it-user", "app").await.unwrap();
    admin.auth_enable().await.unwrap();

    let mut restricted = etcd_operator::etcd::connect(&endpoints, Some(&user)).await.unwrap();
    restricted.put("app/greeting", "hello", None).await.unwrap();
    let refused = restricted.put("elsewhere", "x", None).await.unwrap_err().to_string();
    assert!(refused.contains("permission denied"), "{refused}");
    // Nor may it administer the cluster's users (root only).
    let refused = restricted.user_list().await.map(drop).unwrap_err().to_string();
    assert!(refused.contains("permission denied"), "{refused}");

    // The operator still adds, promotes and removes members, with its own certificate.
    local.set_size(5);
    let grown = local.wait_running(5, Duration::from_secs(120)).await;
    local.set_size(3);
    local.wait_running(3, Duration::from_secs(120)).await;
    assert_eq!(grown.members.len(), 5);
    let mut admin = etcd_operator::etcd::connect(&endpoints[..1], Some(&operator)).await.unwrap();
    let kept = admin.get("app/greeting", None).await.unwrap();
    assert_eq!(kept.kvs()[0].value(), b"hello");
}
