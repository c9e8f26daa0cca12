//! The EtcdBackups that exist, as every replica watches them: what the webhook compares a new
//! backup's destination with ([`etcd_webhook::destinations`]). Until a watch has listed its
//! namespace the store is empty and no overlap is found; retention, which lists only a backup's
//! own level of the store, holds meanwhile.

use etcd_crds::{BackupDestination, EtcdBackup};
use futures::StreamExt;
use kube::ResourceExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};

pub struct WatchedBackups {
    stores: Vec<Store<EtcdBackup>>,
}

impl WatchedBackups {
    /// Watches EtcdBackups in each of `namespaces` (`None`: all of them), from now on.
    pub fn start(client: &kube::Client, namespaces: &[Option<String>]) -> Self {
        let stores = namespaces
            .iter()
            .map(|namespace| {
                let api = super::scoped::<EtcdBackup>(client.clone(), namespace.as_deref());
                let (reader, writer) = reflector::store();
                let watch = watcher(api, watcher::Config::default())
                    .default_backoff()
                    // Only the destination is read: the records in status can be many.
                    .modify(|backup| {
                        backup.status = None;
                        backup.metadata.managed_fields = None;
                    })
                    .reflect(writer)
                    .for_each(|_| std::future::ready(()));
                tokio::spawn(watch);
                reader
            })
            .collect();
        Self { stores }
    }
}

impl etcd_webhook::KnownBackups for WatchedBackups {
    fn destinations(&self) -> Vec<(String, String, BackupDestination)> {
        self.stores
            .iter()
            .flat_map(Store::state)
            .map(|backup| {
                let namespace = backup.namespace().unwrap_or_default();
                (namespace, backup.name_any(), backup.spec.destination.clone())
            })
            .collect()
    }
}
