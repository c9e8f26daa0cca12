//! Knowing when to stop: what a long-running command (`run`, `local`, `webhook`) waits for.

/// Ctrl-C or SIGTERM (what Kubernetes and `local down` send).
pub async fn signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
