//! Membership: the planner, the etcd client layer, the member port and its adapters (issue 5).
