//! `PUT /vsock` and the host side of Firecracker's hybrid vsock.
//!
//! Firecracker's virtio-vsock device has no host kernel part: it listens on a Unix socket
//! (`uds_path`), and a host program that wants a guest port connects there, writes
//! `CONNECT <port>\n` and, once the guest accepted, reads `OK <host port>\n`; the socket is
//! then the connection's byte stream. A port the guest does not listen on is refused by
//! closing the socket.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use http::Method;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::client::Request;

/// The guest's context id. Each Firecracker has a device of its own, so every guest can have
/// the same one (3 is the first a guest may take).
pub const GUEST_CID: u32 = 3;

/// Longest acknowledgement read: `OK ` and a u32 and a newline, with room to spare.
const MAX_ACK_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vsock {
    pub guest_cid: u32,
    pub uds_path: PathBuf,
}

impl Request for Vsock {
    const METHOD: Method = Method::PUT;

    fn path(&self) -> Cow<'static, str> {
        "/vsock".into()
    }
}

/// Why a connection to a guest port failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("failed to connect to the vsock socket `{}`", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the vsock handshake failed")]
    Io(#[source] std::io::Error),
    #[error("the guest refused vsock port {port} (nothing listens there yet)")]
    Refused { port: u32 },
    #[error("Firecracker answered `CONNECT {port}` with {answer:?} instead of `OK <port>`")]
    BadAnswer { port: u32, answer: String },
}

/// Connects to guest port `port` through Firecracker's socket `uds_path`.
pub async fn connect(uds_path: &Path, port: u32) -> Result<UnixStream, HandshakeError> {
    let mut stream =
        UnixStream::connect(uds_path)
            .await
            .map_err(|source| HandshakeError::Connect {
                path: uds_path.to_owned(),
                source,
            })?;
    stream
        .write_all(connect_request(port).as_bytes())
        .await
        .map_err(HandshakeError::Io)?;
    // Byte by byte: the guest may send right after the acknowledgement, and what follows the
    // newline belongs to the caller's stream.
    let mut answer = Vec::with_capacity(MAX_ACK_LEN);
    loop {
        let byte = match stream.read_u8().await {
            Ok(byte) => byte,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(HandshakeError::Refused { port })
            }
            Err(e) => return Err(HandshakeError::Io(e)),
        };
        answer.push(byte);
        if byte == b'\n' || answer.len() >= MAX_ACK_LEN {
            break;
        }
    }
    parse_ack(&answer).ok_or_else(|| HandshakeError::BadAnswer {
        port,
        answer: String::from_utf8_lossy(&answer).into_owned(),
    })?;
    Ok(stream)
}

fn connect_request(port: u32) -> String {
    format!("CONNECT {port}\n")
}

/// The host-side port of an `OK <port>\n` acknowledgement.
fn parse_ack(line: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(line).ok()?;
    text.strip_suffix('\n')?.strip_prefix("OK ")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_body_uses_the_swagger_field_names() {
        let vsock = Vsock {
            guest_cid: GUEST_CID,
            uds_path: "vsock.sock".into(),
        };
        assert_eq!(
            serde_json::to_value(vsock).unwrap(),
            serde_json::json!({"guest_cid": 3, "uds_path": "vsock.sock"})
        );
    }

    #[test]
    fn test_handshake_lines() {
        assert_eq!(connect_request(1024), "CONNECT 1024\n");
        assert_eq!(parse_ack(b"OK 1073741824\n"), Some(1_073_741_824));
        for bad in [
            &b"OK 12"[..],
            b"OK\n",
            b"ok 12\n",
            b"OK -1\n",
            b"OK 12 \n",
            b"\xffOK 1\n",
        ] {
            assert_eq!(parse_ack(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn test_connect_reads_only_the_acknowledgement() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 13];
            stream.read_exact(&mut request).await.unwrap();
            assert_eq!(&request, b"CONNECT 1024\n");
            stream.write_all(b"OK 77\nhello").await.unwrap();
            // A refusal: the next connection is closed at once.
            let (mut stream, _) = listener.accept().await.unwrap();
            let _ = stream.read(&mut [0u8; 16]).await;
        });
        let mut stream = connect(&path, 1024).await.unwrap();
        let mut rest = [0u8; 5];
        stream.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"hello");
        assert!(matches!(
            connect(&path, 1024).await,
            Err(HandshakeError::Refused { port: 1024 })
        ));
        server.await.unwrap();
    }
}
