//! Membership: the planner (pure), the member port it acts through, and the process adapter that
//! runs members as local etcd processes.

pub mod planner;
