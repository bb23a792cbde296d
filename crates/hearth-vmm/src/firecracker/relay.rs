//! The agent stream on Firecracker: a Unix socket in the run dir that relays each client to the
//! guest agent's vsock port.
//!
//! Why a relay rather than handing the engine Firecracker's vsock socket: the engine holds the
//! agent stream as "connect to a Unix socket, write the hello, read the answer" (QEMU's
//! virtio-serial chardev), and a hello written before the agent opened its port waits in that
//! stream. Firecracker's hybrid vsock instead wants `CONNECT <port>` on every connection and
//! refuses it until the guest listens. The relay turns the second into the first — it keeps
//! the client's bytes and retries the handshake until the agent accepts — so nothing above
//! `hearth-vmm` knows which backend runs the VM. One client at a time, as on QEMU.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use super::vsock;

/// Pause between refused handshakes while the guest boots.
const RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// How long one handshake may wait for Firecracker's answer: a guest whose vsock driver is not
/// up yet leaves `CONNECT` unanswered rather than refused.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Most client bytes kept while the guest is not listening yet (the hello is a few bytes);
/// past it the client is not read until the connection is made.
const MAX_PENDING: usize = 64 * 1024;

/// The relay task; it ends, and its socket goes, when this is dropped.
#[derive(Debug)]
pub(crate) struct Relay {
    task: tokio::task::JoinHandle<()>,
    path: PathBuf,
}

impl Relay {
    /// Listens on `path` (0600) and relays each client to guest port `port` through
    /// Firecracker's vsock socket `uds_path`.
    pub(crate) fn spawn(path: &Path, uds_path: PathBuf, port: u32) -> std::io::Result<Self> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = std::os::unix::net::UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        let listener = UnixListener::from_std(listener)?;
        let task = tokio::spawn(serve(listener, uds_path, port));
        Ok(Relay {
            task,
            path: path.to_owned(),
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve(listener: UnixListener, uds_path: PathBuf, port: u32) {
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                if let Err(e) = relay(client, &uds_path, port).await {
                    tracing::debug!(error = %e, "agent stream relay ended");
                }
            }
            Err(e) => {
                // Out of descriptors, most likely; the VM's owner may retry.
                tracing::warn!(error = %e, "accepting on the agent stream failed");
                tokio::time::sleep(RETRY_INTERVAL).await;
            }
        }
    }
}

/// Connects `client` to the guest port, keeping what the client sends meanwhile, then copies
/// both ways until both ends are done. Returns early when the client leaves first.
async fn relay(mut client: UnixStream, uds_path: &Path, port: u32) -> std::io::Result<()> {
    let mut pending = Vec::new();
    let mut guest = loop {
        let attempt = tokio::time::timeout(HANDSHAKE_TIMEOUT, vsock::connect(uds_path, port));
        match buffering(&mut client, &mut pending, attempt).await? {
            None => return Ok(()),
            Some(Ok(Ok(stream))) => break stream,
            Some(Ok(Err(e))) => tracing::trace!(error = %e, "agent not reachable yet"),
            Some(Err(_)) => tracing::trace!("vsock handshake unanswered"),
        }
        if buffering(
            &mut client,
            &mut pending,
            tokio::time::sleep(RETRY_INTERVAL),
        )
        .await?
        .is_none()
        {
            return Ok(());
        }
    };
    guest.write_all(&pending).await?;
    tokio::io::copy_bidirectional(&mut client, &mut guest).await?;
    Ok(())
}

/// Runs `work` while reading what the client sends into `pending`; `None` when the client
/// hung up first.
async fn buffering<T>(
    client: &mut UnixStream,
    pending: &mut Vec<u8>,
    work: impl Future<Output = T>,
) -> std::io::Result<Option<T>> {
    let mut work = std::pin::pin!(work);
    loop {
        let room = pending.len() < MAX_PENDING;
        tokio::select! {
            done = &mut work => return Ok(Some(done)),
            read = client.read_buf(pending), if room => {
                if read? == 0 {
                    return Ok(None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for Firecracker's vsock socket that refuses the first `refusals` handshakes,
    /// then accepts and echoes.
    async fn fake_vsock(listener: UnixListener, refusals: usize) {
        for _ in 0..refusals {
            let (stream, _) = listener.accept().await.unwrap();
            drop(stream);
        }
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 13];
        stream.read_exact(&mut request).await.unwrap();
        assert_eq!(&request, b"CONNECT 1024\n");
        stream.write_all(b"OK 5\n").await.unwrap();
        let (mut read, mut write) = stream.split();
        tokio::io::copy(&mut read, &mut write).await.unwrap();
    }

    #[tokio::test]
    async fn test_bytes_sent_before_the_guest_listens_arrive_once_it_does() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("vsock.sock");
        let vsock = tokio::spawn(fake_vsock(UnixListener::bind(&uds).unwrap(), 3));
        let agent = dir.path().join("agent.sock");
        let _relay = Relay::spawn(&agent, uds, 1024).unwrap();
        let mut client = UnixStream::connect(&agent).await.unwrap();
        client.write_all(b"hello").await.unwrap();
        let mut echoed = [0u8; 5];
        client.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"hello");
        client.shutdown().await.unwrap();
        vsock.await.unwrap();
    }

    #[tokio::test]
    async fn test_dropping_the_relay_removes_its_socket() {
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("agent.sock");
        let relay = Relay::spawn(&agent, dir.path().join("none.sock"), 1024).unwrap();
        assert!(agent.exists());
        drop(relay);
        assert!(!agent.exists());
    }
}
