//! The etcd client layer: connections over mTLS, membership calls, per-endpoint status (issue 5).
