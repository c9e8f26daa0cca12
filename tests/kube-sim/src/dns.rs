//! Cluster DNS, as CoreDNS's kubernetes plugin answers it, written into the cluster's
//! /etc/hosts (every pod's and COMMAND's): a Service's name resolves to its ready endpoints from
//! its EndpointSlices (there is no kube-proxy here, so a name resolves to the addresses it would
//! balance over rather than to a ClusterIP), and a headless Service's endpoint with a hostname to
//! `HOSTNAME.SERVICE.NAMESPACE.svc`. `kubernetes.default.svc` is the API server.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use crate::client::{Api, namespace_of};
use crate::sandbox;

/// The records DNS answers for, from the Services' EndpointSlices.
pub fn records(slices: &[serde_json::Value]) -> BTreeSet<(String, String)> {
    let mut records = BTreeSet::new();
    for name in
        ["kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "kubernetes.default"]
    {
        records.insert((sandbox::API_SERVICE_IP.to_owned(), name.to_owned()));
    }
    for slice in slices {
        let Some(service) = slice["metadata"]["labels"]["kubernetes.io/service-name"].as_str()
        else {
            continue;
        };
        if service == "kubernetes" && namespace_of(slice) == "default" {
            continue;
        }
        let namespace = namespace_of(slice);
        for endpoint in slice["endpoints"].as_array().into_iter().flatten() {
            // `ready` unset means ready; terminating endpoints are not served.
            if endpoint["conditions"]["ready"] == false {
                continue;
            }
            for ip in
                endpoint["addresses"].as_array().into_iter().flatten().filter_map(|a| a.as_str())
            {
                for suffix in ["svc", "svc.cluster.local"] {
                    records.insert((ip.to_owned(), format!("{service}.{namespace}.{suffix}")));
                    if let Some(host) = endpoint["hostname"].as_str() {
                        records.insert((
                            ip.to_owned(),
                            format!("{host}.{service}.{namespace}.{suffix}"),
                        ));
                    }
                }
            }
        }
    }
    records
}

/// Keeps the hosts file equal to the records, written in place so bind mounts of it see each
/// change. Cluster DNS never goes blank, so neither may this file: the new records are written
/// over the old ones in one write, padded with newlines to the old length, and only then is the
/// file cut to size (truncating first would leave an empty file for every lookup that comes in
/// between: "Temporary failure in name resolution").
pub async fn run(api: Api, hosts: PathBuf) {
    let mut last = String::new();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let Ok(slices) = api.list("/apis/discovery.k8s.io/v1/endpointslices").await else {
            continue;
        };
        let mut text = String::from("127.0.0.1 localhost\n");
        for (ip, name) in records(&slices) {
            text.push_str(&format!("{ip} {name}\n"));
        }
        if text == last {
            continue;
        }
        use std::os::unix::fs::FileExt;
        if let Ok(file) = std::fs::OpenOptions::new().write(true).open(&hosts) {
            let mut padded = text.clone().into_bytes();
            padded.resize(text.len().max(last.len()), b'\n');
            if file.write_all_at(&padded, 0).is_ok() {
                let _ = file.set_len(text.len() as u64);
            }
        }
        last = text;
    }
}
