//! Kubernetes objects built for an EtcdCluster (pure functions, applied with server-side apply),
//! and `member-init`, the init container of every etcd pod.

pub mod bootstrap;
pub mod claims;
pub mod etcd_config;
pub mod member_init;
pub mod members;
pub mod objects;
pub mod roll;
