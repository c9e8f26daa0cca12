//! The operator's TLS at run time: the webhook serving certificate and each cluster's PKI in
//! Secrets (issue 3).
