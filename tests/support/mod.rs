pub mod apiserver;
pub mod etcd;
