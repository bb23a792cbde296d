//! The hybrid vsock scheme shared by Firecracker and vhost-device-vsock: the host reaches guest
//! port P by connecting to one Unix socket and writing `CONNECT P\n` (answered `OK <n>\n`);
//! guest connections to host port P arrive on the Unix socket `<uds>_P`.

use std::io;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Longest reply line accepted; `OK 4294967295\n` fits easily.
const MAX_REPLY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("failed to connect to vsock socket `{}`", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("guest port {port} refused the connection (nothing listening, or the guest is gone)")]
    Refused { port: u32 },
    #[error("unexpected reply {reply:?} to CONNECT {port}")]
    BadReply { port: u32, reply: String },
    #[error("i/o error during the CONNECT {port} handshake")]
    Handshake {
        port: u32,
        #[source]
        source: io::Error,
    },
}

/// Path on which the host listens for guest-initiated connections to `port`.
pub fn listener_path(uds: &Path, port: u32) -> PathBuf {
    let mut path = uds.as_os_str().to_owned();
    path.push(format!("_{port}"));
    PathBuf::from(path)
}

/// Opens a stream to guest `port` through the hybrid socket `uds`.
pub async fn connect(uds: &Path, port: u32) -> Result<UnixStream, VsockError> {
    let mut stream = UnixStream::connect(uds)
        .await
        .map_err(|source| VsockError::Connect {
            path: uds.to_owned(),
            source,
        })?;
    let handshake = |source| VsockError::Handshake { port, source };
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(handshake)?;
    // Read byte by byte: whatever follows the newline already belongs to the guest's stream.
    let mut reply = Vec::with_capacity(MAX_REPLY_LEN);
    loop {
        let mut byte = [0u8; 1];
        match stream.read(&mut byte).await {
            Ok(0) => return Err(VsockError::Refused { port }),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if reply.len() < MAX_REPLY_LEN => reply.push(byte[0]),
            Ok(_) => return Err(bad_reply(port, &reply)),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(VsockError::Refused { port })
            }
            Err(source) => return Err(handshake(source)),
        }
    }
    if reply.starts_with(b"OK ") {
        Ok(stream)
    } else {
        Err(bad_reply(port, &reply))
    }
}

fn bad_reply(port: u32, reply: &[u8]) -> VsockError {
    VsockError::BadReply {
        port,
        reply: String::from_utf8_lossy(reply).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::UnixListener;

    use super::*;

    #[test]
    fn test_listener_path_appends_port() {
        assert_eq!(
            listener_path(Path::new("/run/x/vsock.sock"), 1025),
            PathBuf::from("/run/x/vsock.sock_1025")
        );
    }

    /// A peer that answers the handshake like vhost-device-vsock, then sends payload right
    /// behind the reply, which must stay in the stream.
    async fn serve_once(listener: UnixListener, reply: &'static [u8]) {
        let (mut peer, _) = listener.accept().await.unwrap();
        let mut line = [0u8; 13];
        peer.read_exact(&mut line).await.unwrap();
        assert_eq!(&line, b"CONNECT 1024\n");
        peer.write_all(reply).await.unwrap();
    }

    #[tokio::test]
    async fn test_connect_keeps_bytes_after_ok_line() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        let listener = UnixListener::bind(&uds).unwrap();
        let server = tokio::spawn(serve_once(listener, b"OK 1073741824\npayload"));
        let mut stream = connect(&uds, 1024).await.unwrap();
        let mut rest = String::new();
        stream.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "payload");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn test_connect_closed_without_reply_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        let listener = UnixListener::bind(&uds).unwrap();
        let server = tokio::spawn(serve_once(listener, b""));
        let err = connect(&uds, 1024).await.unwrap_err();
        assert!(matches!(err, VsockError::Refused { port: 1024 }), "{err}");
        server.await.unwrap();
    }
}
