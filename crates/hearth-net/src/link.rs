//! Links, addresses and routes through rtnetlink. Each call runs on its own thread with a
//! small runtime, optionally inside a namespace, so callers stay synchronous (teardown runs
//! from `Drop`) and never change namespace themselves.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressHeaderFlags};
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::netns::{self, NetnsError};

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("failed to open an rtnetlink socket")]
    Connect(#[source] std::io::Error),
    #[error("failed to start a netlink worker")]
    Runtime(#[source] std::io::Error),
    #[error("netlink: failed to {action} `{name}`")]
    Netlink {
        action: &'static str,
        name: String,
        #[source]
        source: Box<rtnetlink::Error>,
    },
    #[error("link `{0}` does not exist")]
    NotFound(String),
    #[error("failed to open network namespace `{}` to move `{name}` into it", path.display())]
    OpenNetns {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("a netlink worker thread panicked")]
    ThreadPanicked,
}

/// An rtnetlink connection bound to the namespace it was opened in.
#[derive(Debug, Clone)]
pub struct Links {
    handle: Handle,
}

/// Runs `f` with a fresh rtnetlink connection on a new thread, inside `netns` when given.
pub fn run<T, F, Fut>(netns: Option<&Path>, f: F) -> Result<T, LinkError>
where
    T: Send,
    F: FnOnce(Links) -> Fut + Send,
    Fut: Future<Output = Result<T, LinkError>>,
{
    let work = move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(LinkError::Runtime)?;
        runtime.block_on(async move {
            let (connection, handle, _) =
                rtnetlink::new_connection().map_err(LinkError::Connect)?;
            tokio::spawn(connection);
            f(Links { handle }).await
        })
    };
    match netns {
        Some(path) => netns::run_in(path, work)?,
        None => std::thread::scope(|s| {
            s.spawn(work)
                .join()
                .unwrap_or(Err(LinkError::ThreadPanicked))
        }),
    }
}

fn nl(action: &'static str, name: &str) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    let name = name.to_owned();
    move |source| LinkError::Netlink {
        action,
        name,
        source: Box::new(source),
    }
}

/// Whether a netlink error is "no such device/address", which teardown treats as done.
fn is_not_found(err: &rtnetlink::Error) -> bool {
    matches!(err, rtnetlink::Error::NetlinkError(msg)
        if matches!(msg.raw_code().abs(), libc::ENODEV | libc::ENOENT | libc::ESRCH))
}

impl Links {
    pub async fn index(&self, name: &str) -> Result<u32, LinkError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(link.header.index),
            Ok(None) => Err(LinkError::NotFound(name.to_owned())),
            Err(e) if is_not_found(&e) => Err(LinkError::NotFound(name.to_owned())),
            Err(e) => Err(nl("look up", name)(e)),
        }
    }

    pub async fn add_veth(&self, name: &str, peer: &str) -> Result<(), LinkError> {
        self.handle
            .link()
            .add(LinkVeth::new(name, peer).build())
            .execute()
            .await
            .map_err(nl("create veth pair", name))
    }

    /// Moves link `name` into the namespace at `netns`.
    pub async fn move_to(&self, name: &str, netns: &Path) -> Result<(), LinkError> {
        let index = self.index(name).await?;
        let ns = std::fs::File::open(netns).map_err(|source| LinkError::OpenNetns {
            name: name.to_owned(),
            path: netns.to_owned(),
            source,
        })?;
        let message = LinkUnspec::new_with_index(index)
            .setns_by_fd(ns.as_raw_fd())
            .build();
        self.set(message, "move into its namespace", name).await
    }

    /// Applies one change to a link; `action` and `name` describe it in the error.
    async fn set(
        &self,
        message: LinkMessage,
        action: &'static str,
        name: &str,
    ) -> Result<(), LinkError> {
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(nl(action, name))
    }

    /// Gives the link a hardware address.
    pub async fn set_mac(&self, name: &str, mac: [u8; 6]) -> Result<(), LinkError> {
        let index = self.index(name).await?;
        let message = LinkUnspec::new_with_index(index)
            .address(mac.to_vec())
            .build();
        self.set(message, "set the address of", name).await
    }

    pub async fn set_up(&self, name: &str) -> Result<u32, LinkError> {
        let index = self.index(name).await?;
        let message = LinkUnspec::new_with_index(index).up().build();
        self.set(message, "bring up", name).await?;
        Ok(index)
    }

    pub async fn add_address(
        &self,
        name: &str,
        addr: IpAddr,
        prefix_len: u8,
    ) -> Result<(), LinkError> {
        let index = self.index(name).await?;
        let mut request = self.handle.address().add(index, addr, prefix_len);
        if addr.is_ipv6() {
            // No duplicate address detection: the link is ours alone, and a tentative address
            // could not be used (nor routed through) until DAD finished.
            request.message_mut().header.flags = AddressHeaderFlags::Nodad;
        }
        request
            .execute()
            .await
            .map_err(nl("add an address to", name))
    }

    pub async fn add_default_route(&self, gateway: IpAddr) -> Result<(), LinkError> {
        let route = match gateway {
            IpAddr::V4(v4) => RouteMessageBuilder::<Ipv4Addr>::new().gateway(v4).build(),
            IpAddr::V6(v6) => RouteMessageBuilder::<Ipv6Addr>::new().gateway(v6).build(),
        };
        self.handle
            .route()
            .add(route)
            .execute()
            .await
            .map_err(nl("add the default route via", &gateway.to_string()))
    }

    /// Deletes link `name`; a link that does not exist is not an error.
    pub async fn delete(&self, name: &str) -> Result<(), LinkError> {
        let index = match self.index(name).await {
            Ok(index) => index,
            Err(LinkError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(nl("delete", name)(e)),
        }
    }

    /// Every address configured on any interface of this namespace.
    pub async fn addresses(&self) -> Result<Vec<IpAddr>, LinkError> {
        self.addresses_filtered(None).await
    }

    /// The addresses of link `name`.
    pub async fn addresses_of(&self, name: &str) -> Result<Vec<IpAddr>, LinkError> {
        let index = self.index(name).await?;
        self.addresses_filtered(Some(index)).await
    }

    async fn addresses_filtered(&self, index: Option<u32>) -> Result<Vec<IpAddr>, LinkError> {
        let mut request = self.handle.address().get();
        if let Some(index) = index {
            request = request.set_link_index_filter(index);
        }
        let mut stream = request.execute();
        let mut out = Vec::new();
        while let Some(message) = stream
            .try_next()
            .await
            .map_err(nl("list addresses of", "all links"))?
        {
            for attr in message.attributes {
                if let AddressAttribute::Address(addr) = attr {
                    out.push(addr);
                }
            }
        }
        Ok(out)
    }
}
