pub mod apiserver;
pub mod authorizer;
pub mod etcd;
pub mod history;
pub mod https;
pub mod local;
pub mod s3;
