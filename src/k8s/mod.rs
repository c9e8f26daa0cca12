//! Kubernetes objects built for a cluster, and the Kubernetes member adapter (issue 5).
