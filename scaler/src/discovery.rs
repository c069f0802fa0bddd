//! Prometheus HTTP service discovery (`GET /prometheus/targets` on the admin API):
//! every replica of every service, supervised or static, in whatever state (a replica
//! that stopped answering stays listed, so its scrape fails and `up` says so), and the
//! scaler itself. Each target carries the labels `service` and `replica`.
//!
//! Prometheus re-reads the list every `refresh_interval`, so replicas that the
//! supervisor or the autoscaler start and stop come and go from its targets by
//! themselves, in every mode: child processes (`127.0.0.1:<port>`) and containers
//! (their address on the Compose network, which a Prometheus on that network reaches).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use crate::Platform;

/// The `service` and `replica` labels of the scaler's own target.
pub const SCALER: &str = "scaler";

/// How Prometheus reaches the admin API, for the scaler's own target.
#[derive(Debug, Clone)]
pub struct AdminAddress {
    /// The address the admin API listens on.
    pub listen: SocketAddr,
    /// A host name or IP the deployment gives (`--advertise-host`), used as is with
    /// the listen port.
    pub advertise: Option<String>,
}

impl AdminAddress {
    /// `host:port` of the admin API as its replicas' scrapers see it: the advertised
    /// host; else the listen address; else, when that is unspecified (`0.0.0.0`), this
    /// machine's address on the way to its replicas (`127.0.0.1` for child processes,
    /// the scaler container's address on the Compose network for containers).
    pub fn target(&self, replica_urls: &[String]) -> String {
        let port = self.listen.port();
        if let Some(host) = &self.advertise {
            return match host.parse::<IpAddr>() {
                Ok(ip) => SocketAddr::new(ip, port).to_string(),
                Err(_) => format!("{host}:{port}"),
            };
        }
        let ip = self.listen.ip();
        if !ip.is_unspecified() {
            return self.listen.to_string();
        }
        let toward = replica_urls
            .iter()
            .filter_map(|url| host_port(url).rsplit_once(':')?.0.parse::<IpAddr>().ok())
            .find_map(local_address_toward);
        SocketAddr::new(toward.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)), port).to_string()
    }
}

/// The local address this machine would use to reach `peer` (a UDP socket's
/// "connect" sends nothing; it only picks the route).
fn local_address_toward(peer: IpAddr) -> Option<IpAddr> {
    if peer.is_loopback() {
        return Some(peer);
    }
    let any: SocketAddr = match peer {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(any).ok()?;
    socket.connect((peer, 9)).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

/// `http://10.0.0.7:8080/` -> `10.0.0.7:8080`; a URL without a port gets its scheme's.
pub fn host_port(url: &str) -> String {
    let (rest, default_port) = if let Some(rest) = url.strip_prefix("https://") {
        (rest, 443)
    } else {
        (url.strip_prefix("http://").unwrap_or(url), 80)
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let has_port = match authority.rsplit_once(':') {
        // An IPv6 literal without a port ends in `]`.
        Some((_, port)) => !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    };
    if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:{default_port}")
    }
}

/// One target group of the http_sd format.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct TargetGroup {
    pub targets: Vec<String>,
    pub labels: BTreeMap<&'static str, String>,
}

impl TargetGroup {
    fn new(target: String, service: &str, replica: &str) -> Self {
        Self {
            targets: vec![target],
            labels: BTreeMap::from([
                ("service", service.to_owned()),
                ("replica", replica.to_owned()),
            ]),
        }
    }
}

/// Every replica of every service (by service, then as the pool lists them), then the
/// scaler.
pub fn targets(platform: &Platform) -> Vec<TargetGroup> {
    let mut groups = Vec::new();
    for (name, svc) in platform.services.iter() {
        for backend in svc.balancer.pool.all() {
            groups.push(TargetGroup::new(host_port(&backend.url), name, &backend.id));
        }
    }
    if let Some(admin) = &platform.admin {
        let urls: Vec<String> = platform
            .services
            .values()
            .flat_map(|s| s.balancer.pool.all())
            .map(|b| b.url.clone())
            .collect();
        groups.push(TargetGroup::new(admin.target(&urls), SCALER, SCALER));
    }
    groups
}

/// `GET /prometheus/targets`: read-only, like `/status`.
pub async fn handler(State(platform): State<Platform>) -> Json<Vec<TargetGroup>> {
    Json(targets(&platform))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_become_host_and_port() {
        assert_eq!(host_port("http://127.0.0.1:41234"), "127.0.0.1:41234");
        assert_eq!(host_port("http://10.0.0.7:8080/"), "10.0.0.7:8080");
        assert_eq!(host_port("http://music"), "music:80");
        assert_eq!(host_port("https://music/x"), "music:443");
        assert_eq!(host_port("http://[::1]:9000/a"), "[::1]:9000");
        assert_eq!(host_port("http://[::1]"), "[::1]:80");
    }

    #[test]
    fn the_scaler_is_found_where_it_listens_or_where_it_is_advertised() {
        let at = |listen: &str, advertise: Option<&str>| AdminAddress {
            listen: listen.parse().expect("address"),
            advertise: advertise.map(str::to_owned),
        };
        let local = ["http://127.0.0.1:41234".to_owned()];
        assert_eq!(
            at("127.0.0.1:30010", None).target(&local),
            "127.0.0.1:30010"
        );
        assert_eq!(
            at("0.0.0.0:30010", Some("scaler")).target(&local),
            "scaler:30010"
        );
        // On every interface: the address its (local) replicas are reached from.
        assert_eq!(at("0.0.0.0:30010", None).target(&local), "127.0.0.1:30010");
        assert_eq!(at("0.0.0.0:30010", None).target(&[]), "127.0.0.1:30010");
    }
}
