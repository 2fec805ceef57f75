//! Upstream name resolution, off the request path: a background thread resolves every host the
//! config names and publishes the table through `arc-swap`; shards only read it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

/// Resolved addresses by host name (IP literals included, mapped to themselves).
#[derive(Debug, Default, Clone)]
pub struct DnsTable {
    hosts: HashMap<String, Arc<[IpAddr]>>,
}

impl DnsTable {
    /// The addresses of `host`, if it was resolved.
    pub fn lookup(&self, host: &str) -> Option<&[IpAddr]> {
        self.hosts.get(host).map(|a| &a[..])
    }

    /// Resolves every host (blocking: call from a background thread). A host that fails to
    /// resolve keeps its previous addresses, so a DNS hiccup does not take a provider down.
    pub fn resolve(hosts: &[(String, u16)], previous: &DnsTable) -> (DnsTable, Vec<String>) {
        let mut table = DnsTable::default();
        let mut failures = Vec::new();
        for (host, port) in hosts {
            if table.hosts.contains_key(host) {
                continue;
            }
            if let Ok(ip) = host.parse::<IpAddr>() {
                table.hosts.insert(host.clone(), Arc::from(vec![ip]));
                continue;
            }
            match (host.as_str(), *port).to_socket_addrs() {
                Ok(addrs) => {
                    let mut ips: Vec<IpAddr> = addrs.map(|a: SocketAddr| a.ip()).collect();
                    ips.dedup();
                    if ips.is_empty() {
                        failures.push(format!("{host}: no addresses"));
                    } else {
                        table.hosts.insert(host.clone(), Arc::from(ips));
                        continue;
                    }
                }
                Err(e) => failures.push(format!("{host}: {e}")),
            }
            if let Some(old) = previous.hosts.get(host) {
                table.hosts.insert(host.clone(), old.clone());
            }
        }
        (table, failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_localhost() {
        let hosts = vec![("127.0.0.1".to_string(), 80), ("localhost".to_string(), 80), ("::1".to_string(), 1)];
        let (t, failures) = DnsTable::resolve(&hosts, &DnsTable::default());
        assert!(failures.is_empty(), "{failures:?}");
        assert_eq!(t.lookup("127.0.0.1").unwrap(), &[IpAddr::from([127, 0, 0, 1])]);
        assert!(!t.lookup("localhost").unwrap().is_empty());
        assert!(t.lookup("example.invalid").is_none());
    }

    #[test]
    fn failure_keeps_previous() {
        let mut prev = DnsTable::default();
        prev.hosts.insert("no-such-host.invalid".into(), Arc::from(vec![IpAddr::from([10, 0, 0, 1])]));
        let (t, failures) = DnsTable::resolve(&[("no-such-host.invalid".into(), 443)], &prev);
        assert_eq!(failures.len(), 1);
        assert_eq!(t.lookup("no-such-host.invalid").unwrap(), &[IpAddr::from([10, 0, 0, 1])]);
    }
}
