//! Published ports: `-p [HOST_IP:]HOST_PORT:GUEST_PORT[/tcp]`. hearth listens on the host
//! address and carries each connection into the sandbox's namespace to the guest, in user
//! space, so nothing on the host is rerouted and loopback publishing works without
//! `route_localnet`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::netns;
use crate::pool::GUEST_ADDR;

/// How long a connection into the guest may take before the host side is closed.
const GUEST_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One `-p` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub guest_port: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(
        "`{0}` is not [HOST_IP:]HOST_PORT:GUEST_PORT[/tcp] (like 8080:80 or 127.0.0.1:8080:80)"
    )]
    InvalidSpec(String),
    #[error("`{0}`: only TCP ports can be published so far")]
    UdpUnsupported(String),
    #[error("cannot publish {addr}: the port is already in use or not bindable")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to hand the listener on {addr} to the runtime")]
    Register {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl FromStr for PortSpec {
    type Err = PublishError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let invalid = || PublishError::InvalidSpec(value.to_owned());
        let (ports, proto) = value.split_once('/').unwrap_or((value, "tcp"));
        match proto {
            "tcp" => {}
            "udp" => return Err(PublishError::UdpUnsupported(value.to_owned())),
            _ => return Err(invalid()),
        }
        let (rest, guest) = ports.rsplit_once(':').ok_or_else(invalid)?;
        let (host_ip, host_port) = match rest.rsplit_once(':') {
            Some((ip, port)) => {
                let ip = ip.trim_start_matches('[').trim_end_matches(']');
                (ip.parse().map_err(|_| invalid())?, port)
            }
            None => (IpAddr::V4(Ipv4Addr::LOCALHOST), rest),
        };
        let port = |p: &str| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(invalid)
        };
        Ok(PortSpec {
            host_ip,
            host_port: port(host_port)?,
            guest_port: port(guest)?,
        })
    }
}

impl std::fmt::Display for PortSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = SocketAddr::new(self.host_ip, self.host_port);
        write!(f, "{host}->{}/tcp", self.guest_port)
    }
}

/// Host listeners for a sandbox's published ports. Bound at creation, so a port in use fails
/// before any VM starts; forwarding begins with [`PublishedPorts::start`] and stops on drop.
#[derive(Debug, Default)]
pub struct PublishedPorts {
    listeners: Vec<(PortSpec, TcpListener)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl PublishedPorts {
    pub fn bind(specs: &[PortSpec]) -> Result<Self, PublishError> {
        let mut listeners = Vec::new();
        for spec in specs {
            let addr = SocketAddr::new(spec.host_ip, spec.host_port);
            let listener =
                TcpListener::bind(addr).map_err(|source| PublishError::Bind { addr, source })?;
            listeners.push((*spec, listener));
        }
        Ok(PublishedPorts {
            listeners,
            tasks: Vec::new(),
        })
    }

    /// Starts forwarding each listener's connections to the guest inside `netns`. Must run
    /// inside a tokio runtime.
    pub fn start(&mut self, netns: &Path) -> Result<(), PublishError> {
        for (spec, listener) in self.listeners.drain(..) {
            let addr = SocketAddr::new(spec.host_ip, spec.host_port);
            let register = |source| PublishError::Register { addr, source };
            listener.set_nonblocking(true).map_err(register)?;
            let listener = tokio::net::TcpListener::from_std(listener).map_err(register)?;
            let guest = SocketAddr::new(IpAddr::V4(GUEST_ADDR), spec.guest_port);
            let netns = netns.to_owned();
            self.tasks.push(tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(forward(client, netns.clone(), guest));
                }
            }));
        }
        Ok(())
    }
}

/// Connects to the guest from inside its namespace and copies both ways until either side ends.
async fn forward(mut client: tokio::net::TcpStream, netns: PathBuf, guest: SocketAddr) {
    let connected = tokio::task::spawn_blocking(move || {
        netns::run_in(&netns, || {
            std::net::TcpStream::connect_timeout(&guest, GUEST_CONNECT_TIMEOUT)
        })
    })
    .await;
    let upstream = match connected {
        Ok(Ok(Ok(stream))) => stream,
        _ => return,
    };
    if upstream.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(mut upstream) = tokio::net::TcpStream::from_std(upstream) else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

impl Drop for PublishedPorts {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_port_spec_defaults_to_loopback_tcp() {
        let spec: PortSpec = "8080:80".parse().unwrap();
        assert_eq!(spec.host_ip, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!((spec.host_port, spec.guest_port), (8080, 80));
    }

    #[test]
    fn test_port_spec_with_host_ip_and_proto() {
        let spec: PortSpec = "0.0.0.0:8443:443/tcp".parse().unwrap();
        assert_eq!(spec.host_ip, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(spec.to_string(), "0.0.0.0:8443->443/tcp");
        let v6: PortSpec = "[::1]:8080:80".parse().unwrap();
        assert_eq!(v6.host_ip, "::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn test_port_spec_refuses_bad_values() {
        for bad in [
            "80",
            "x:80",
            "8080:0",
            "8080:70000",
            "1.2.3:8080:80",
            "8080:80/sctp",
        ] {
            assert!(
                matches!(bad.parse::<PortSpec>(), Err(PublishError::InvalidSpec(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            "53:53/udp".parse::<PortSpec>(),
            Err(PublishError::UdpUnsupported(_))
        ));
    }

    #[test]
    fn test_bind_refuses_a_port_in_use() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let spec = PortSpec {
            host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            host_port: port,
            guest_port: 80,
        };
        let err = PublishedPorts::bind(&[spec]).unwrap_err();
        assert!(err.to_string().contains("already in use"), "{err}");
    }
}
