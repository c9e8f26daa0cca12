//! etcd-operator as a library: everything the binary runs, so that integration tests in `tests/`
//! drive the same code paths (controllers over a faked `kube::Client`, the HTTPS server, the
//! membership planner against real etcd) without going through the command line.

pub mod backup;
pub mod cli;
pub mod cluster_metrics;
pub mod controller;
pub mod error;
pub mod etcd;
pub mod k8s;
pub mod local;
pub mod membership;
pub mod names;
pub mod retry;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

/// mimalloc instead of glibc malloc: admission reviews and reconciles are serde_json round trips,
/// where glibc's allocator took a third of the instructions (callgrind) and contends across
/// threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
