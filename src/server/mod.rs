//! The one HTTPS service: admission routes, /metrics, /healthz, /readyz (issue 4).
