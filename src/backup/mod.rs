//! Snapshots to and from object storage (issue 6).
