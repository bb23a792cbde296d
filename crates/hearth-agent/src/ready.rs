//! Telling the host the agent is ready: a guest-initiated hello on [`READY_PORT`].

use std::io::{Read, Write};
use std::time::Duration;

use hearth_agent_proto::{
    check_version, read_frame, write_frame, FrameError, HostMessage, RemoteError, READY_PORT,
};

use crate::connection::kind;
use crate::server::hello_message;
use crate::vsock::{VsockError, VsockStream, HOST_CID};

/// The vsock transport may still be settling right after its module loaded.
const CONNECT_ATTEMPTS: u32 = 20;
const CONNECT_RETRY: Duration = Duration::from_millis(50);
/// A host that accepted but never answers must not hold the boot forever.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ReadyError {
    #[error(
        "failed to reach the host on vsock port {READY_PORT} after {CONNECT_ATTEMPTS} attempts"
    )]
    Connect(#[source] VsockError),
    #[error("failed to set a timeout on the ready connection")]
    Timeout(#[source] std::io::Error),
    #[error("failed to send the ready hello")]
    Send(#[source] FrameError),
    #[error("failed to read the host's hello")]
    Receive(#[source] FrameError),
    #[error("the host closed the ready connection without a hello")]
    Closed,
    #[error("the host answered the ready hello with {0} instead of Hello")]
    Unexpected(&'static str),
    #[error("the host speaks another protocol version")]
    Version(#[source] RemoteError),
}

/// Connects to the host's ready port and exchanges hellos.
pub fn announce() -> Result<(), ReadyError> {
    let mut attempt = 1;
    let mut stream = loop {
        match VsockStream::connect(HOST_CID, READY_PORT) {
            Ok(stream) => break stream,
            Err(e) if attempt >= CONNECT_ATTEMPTS => return Err(ReadyError::Connect(e)),
            Err(_) => {
                attempt += 1;
                std::thread::sleep(CONNECT_RETRY);
            }
        }
    };
    stream
        .set_read_timeout(HELLO_TIMEOUT)
        .map_err(ReadyError::Timeout)?;
    exchange_hellos(&mut stream)
}

fn exchange_hellos<S: Read + Write>(stream: &mut S) -> Result<(), ReadyError> {
    write_frame(stream, &hello_message()).map_err(ReadyError::Send)?;
    match read_frame(stream).map_err(ReadyError::Receive)? {
        Some(HostMessage::Hello { version }) => check_version(version).map_err(ReadyError::Version),
        Some(other) => Err(ReadyError::Unexpected(kind(&other))),
        None => Err(ReadyError::Closed),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use hearth_agent_proto::{GuestMessage, PROTOCOL_VERSION};

    use super::*;

    fn exchange_with_host(reply: Option<HostMessage>) -> Result<(), ReadyError> {
        let (mut guest, mut host) = UnixStream::pair().unwrap();
        let host = std::thread::spawn(move || {
            let hello: GuestMessage = read_frame(&mut host).unwrap().unwrap();
            if let Some(reply) = reply {
                write_frame(&mut host, &reply).unwrap();
            }
            hello
        });
        let result = exchange_hellos(&mut guest);
        let hello = host.join().unwrap();
        assert!(
            matches!(hello, GuestMessage::Hello { version, .. } if version == PROTOCOL_VERSION)
        );
        result
    }

    #[test]
    fn test_exchange_hellos_same_version_is_ready() {
        let reply = HostMessage::Hello {
            version: PROTOCOL_VERSION,
        };
        exchange_with_host(Some(reply)).unwrap();
    }

    #[test]
    fn test_exchange_hellos_version_mismatch_is_an_error() {
        let reply = HostMessage::Hello {
            version: PROTOCOL_VERSION + 1,
        };
        let err = exchange_with_host(Some(reply)).unwrap_err();
        assert!(matches!(err, ReadyError::Version(_)), "{err}");
    }

    #[test]
    fn test_exchange_hellos_host_closing_is_an_error() {
        let err = exchange_with_host(None).unwrap_err();
        assert!(matches!(err, ReadyError::Closed), "{err}");
    }
}
