//! An [`Authorizer`] for tests of the HTTPS server: whatever names one of the given objects is
//! denied to everyone, everything else allowed, and each check is kept for the test to look at.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use etcd_webhook::Authorizer;
use etcd_webhook::access::{Check, Use};

#[derive(Default)]
pub struct Unreadable {
    pub names: Vec<&'static str>,
    pub asked: Mutex<Vec<Check>>,
}

impl Unreadable {
    pub fn none() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn of(names: &[&'static str]) -> Arc<Self> {
        Arc::new(Self { names: names.to_vec(), ..Self::default() })
    }

    /// The operator's policy with this authorizer and etcd's own image repositories.
    pub fn policy(self: &Arc<Self>) -> etcd_webhook::Policy {
        etcd_webhook::Policy {
            authorizer: self.clone(),
            repositories: etcd_crds::OFFICIAL_REPOSITORIES.iter().map(|r| r.to_string()).collect(),
            backups: Arc::new(etcd_webhook::destinations::NoneKnown),
        }
    }
}

impl Authorizer for Unreadable {
    fn denied<'a>(
        &'a self,
        check: &'a Check,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Use>, String>> + Send + 'a>> {
        self.asked.lock().unwrap().push(check.clone());
        let denied = check.uses.iter().filter(|u| self.names.contains(&u.name.as_str())).cloned();
        let denied: Vec<Use> = denied.collect();
        Box::pin(async move { Ok(denied) })
    }
}
