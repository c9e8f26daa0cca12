//! Which addresses the operator may reach for a tenant's object store.
//!
//! An EtcdBackup names its store's endpoint, and the operator connects to it from inside the
//! cluster, with the network position of its pod. Left open, a tenant could make the operator
//! call the cloud metadata service, the API server or any Service of another tenant and read the
//! answers back. So a tenant's endpoint must be HTTPS to an address outside the cluster: not
//! loopback, link-local (the metadata services), private (the pod and Service ranges are private
//! ranges on every distribution we know of), shared (CGNAT), multicast or unspecified — checked
//! on every connection, after DNS, so a name that resolves (or later re-resolves) inside is
//! refused too. An administrator lets in-cluster stores through (a MinIO Service, say) by name or
//! by range with `--backup-endpoint-allow`; those may also be plain HTTP. Redirects are not
//! followed: a store that redirects is misconfigured, and a redirect to an address literal would
//! skip the check.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use object_store::ClientOptions;
use object_store::client::{HttpClient, HttpConnector};

/// What an administrator allows beyond the public internet.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EndpointPolicy {
    hosts: Vec<String>,
    nets: Vec<IpNet>,
}

/// Flag text for the refusals, so that a message says how to lift them.
pub const ALLOW_FLAG: &str = "--backup-endpoint-allow";

impl EndpointPolicy {
    /// Parses the administrator's list: host names, addresses and CIDR ranges.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, String> {
        let mut policy = Self::default();
        for item in items.iter().map(|i| i.as_ref().trim()).filter(|i| !i.is_empty()) {
            if let Ok(net) = item.parse::<IpNet>() {
                policy.nets.push(net);
            } else if let Ok(ip) = item.parse::<IpAddr>() {
                policy.nets.push(IpNet::from(ip));
            } else if is_host_name(item) {
                policy.hosts.push(canonical_host(item));
            } else {
                return Err(format!(
                    "{item:?} is neither a host name, an address nor a CIDR range"
                ));
            }
        }
        Ok(policy)
    }

    /// Whether `url` may be a tenant's endpoint. Host names are checked again, address by
    /// address, each time they are resolved.
    pub fn check_url(&self, url: &url::Url) -> Result<(), String> {
        let host = match url.host() {
            Some(url::Host::Domain(name)) => Host::Name(canonical_host(name)),
            Some(url::Host::Ipv4(ip)) => Host::Address(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Host::Address(IpAddr::V6(ip)),
            None => return Err(format!("{url} names no host")),
        };
        let allowed = match &host {
            Host::Name(name) => self.hosts.contains(name),
            Host::Address(ip) => self.allows_address(*ip),
        };
        match url.scheme() {
            "https" => {}
            "http" if allowed => {}
            scheme => {
                return Err(format!(
                    "{url}: a tenant's endpoint must use https, not {scheme}, unless an \
                     administrator allows its host with {ALLOW_FLAG}"
                ));
            }
        }
        match host {
            Host::Address(ip) => self.check_address(&ip.to_string(), ip),
            Host::Name(_) => Ok(()),
        }
    }

    /// Whether `host`, resolved to `ip`, may be connected to.
    pub fn check_address(&self, host: &str, ip: IpAddr) -> Result<(), String> {
        if self.hosts.contains(&canonical_host(host)) || self.allows_address(ip) {
            return Ok(());
        }
        Err(format!(
            "{host} is {ip}, an address inside the cluster or the node (loopback, link-local, \
             private or shared); the operator does not connect there for a tenant unless an \
             administrator allows it with {ALLOW_FLAG}"
        ))
    }

    fn allows_address(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip)) || !is_internal(ip)
    }

    /// The HTTP client factory object_store uses for a tenant's store: every resolution checked,
    /// no redirects, plain HTTP only where `allow_http` (an allowed endpoint asked for it).
    pub fn connector(&self, allow_http: bool) -> GuardedConnector {
        GuardedConnector { policy: Arc::new(self.clone()), allow_http }
    }
}

enum Host {
    Name(String),
    Address(IpAddr),
}

fn canonical_host(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn is_host_name(text: &str) -> bool {
    !text.is_empty()
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Addresses of the node, the cluster or a private network.
fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, ..] = ip.octets();
            ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_broadcast()
                || ip.is_multicast()
                || a == 0
                // Shared address space (RFC 6598), used by carrier NAT and some pod networks.
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(ip) => {
            let first = ip.segments()[0];
            ip.is_loopback()
                || ip.is_unspecified()
                || ip.is_multicast()
                // Unique local (fc00::/7) and link-local (fe80::/10).
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || embedded_v4(ip).is_some_and(|v4| is_internal(IpAddr::V4(v4)))
        }
    }
}

/// The IPv4 address a NAT64 address (64:ff9b::/96) carries: the NAT64 gateway would connect to it.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]).then(|| {
        let [.., a, b, c, d] = ip.octets();
        Ipv4Addr::new(a, b, c, d)
    })
}

/// How long object_store's own client waits; the same here.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// object_store's [`HttpConnector`] for a tenant's store.
#[derive(Debug, Clone)]
pub struct GuardedConnector {
    policy: Arc<EndpointPolicy>,
    allow_http: bool,
}

impl HttpConnector for GuardedConnector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver(self.policy.clone())))
            .https_only(!self.allow_http)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .http1_only()
            .build()
            .map(HttpClient::new)
            .map_err(|err| object_store::Error::Generic { store: "HTTP", source: Box::new(err) })
    }
}

struct GuardedResolver(Arc<EndpointPolicy>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses: Vec<_> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            // One internal address refuses the name: which one a connection would use is not ours
            // to choose.
            for address in &addresses {
                policy.check_address(&host, address.ip())?;
            }
            let addresses: reqwest::dns::Addrs = Box::new(addresses.into_iter());
            Ok(addresses)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> url::Url {
        url::Url::parse(text).unwrap()
    }

    #[test]
    fn addresses_inside_the_cluster_or_the_node_are_refused() {
        let policy = EndpointPolicy::default();
        for endpoint in [
            "https://169.254.169.254/",
            "https://127.0.0.1:6443/",
            "https://10.96.0.1/",
            "https://172.20.0.5/",
            "https://192.168.1.1/",
            "https://100.64.0.10/",
            "https://0.0.0.0/",
            "https://[::1]/",
            "https://[fd00::1]/",
            "https://[fe80::1]/",
            "https://[::ffff:169.254.169.254]/",
            "https://[64:ff9b::a9fe:a9fe]/",
        ] {
            let err = policy.check_url(&url(endpoint)).unwrap_err();
            assert!(err.contains(ALLOW_FLAG), "{endpoint}: {err}");
        }
        for endpoint in ["https://s3.eu-west-1.amazonaws.com/", "https://203.0.113.9:9000/"] {
            policy.check_url(&url(endpoint)).unwrap();
        }
    }

    #[test]
    fn plain_http_only_where_an_administrator_allows_the_host() {
        let policy = EndpointPolicy::default();
        let err = policy.check_url(&url("http://s3.example.com/")).unwrap_err();
        assert!(err.contains("must use https"), "{err}");

        let policy = EndpointPolicy::parse(&["minio.backups.svc", "10.244.0.0/16"]).unwrap();
        policy.check_url(&url("http://minio.backups.svc:9000/")).unwrap();
        policy.check_url(&url("http://MINIO.backups.svc.:9000/")).unwrap();
        policy.check_url(&url("http://10.244.0.1:5000/")).unwrap();
        policy.check_address("minio.backups.svc", "10.96.3.4".parse().unwrap()).unwrap();
        assert!(policy.check_url(&url("https://10.245.0.1/")).is_err());
        assert!(policy.check_address("other.svc", "10.96.3.4".parse().unwrap()).is_err());
    }

    #[test]
    fn an_allow_list_entry_that_is_nothing_is_refused() {
        let err = EndpointPolicy::parse(&["http://x/"]).unwrap_err();
        assert!(err.contains("http://x/"), "{err}");
        assert_eq!(EndpointPolicy::parse(&[" ", ""]).unwrap(), EndpointPolicy::default());
    }
}
