//! Host side of the agent protocol: the readiness handshake and per-operation connections.

use std::path::Path;

use hearth_agent_proto::{
    check_version, encode_frame, read_frame_async, write_frame_async, FrameError, GuestMessage,
    HostMessage, RemoteError, AGENT_PORT, PROTOCOL_VERSION,
};
use hearth_vmm::vsock::{self, VsockError};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("failed to reach the guest agent")]
    Connect(#[source] VsockError),
    #[error("lost the connection to the guest agent")]
    Frame(#[from] FrameError),
    #[error("the guest agent closed the connection unexpectedly")]
    Closed,
    #[error("the guest agent refused the request")]
    Remote(#[source] RemoteError),
    #[error("the guest agent sent {got} where {expected} was expected")]
    Unexpected { expected: &'static str, got: String },
}

/// Reads the next message, treating a clean close as an error.
pub(crate) async fn next_message(stream: &mut UnixStream) -> Result<GuestMessage, AgentError> {
    read_frame_async(stream).await?.ok_or(AgentError::Closed)
}

/// Waits for the agent's guest-initiated ready connection and answers its hello.
pub(crate) async fn accept_ready(listener: &UnixListener) -> Result<String, AgentError> {
    let (mut stream, _) = listener
        .accept()
        .await
        .map_err(|e| AgentError::Frame(FrameError::Io(e)))?;
    let agent_version = match next_message(&mut stream).await? {
        GuestMessage::Hello {
            version,
            agent_version,
        } => {
            // Answer first so the agent can report the mismatch on the console as well.
            write_frame_async(
                &mut stream,
                &HostMessage::Hello {
                    version: PROTOCOL_VERSION,
                },
            )
            .await?;
            check_version(version).map_err(AgentError::Remote)?;
            agent_version
        }
        other => return Err(unexpected("hello", &other)),
    };
    Ok(agent_version)
}

/// Opens a connection for one operation: sends the hello and the operation's request together
/// (one write, no wait for the agent's hello first, which saves a round trip through the guest
/// on every exec), then checks the agent's hello. An agent of another version answers the
/// hello with an error and never reads the request.
pub(crate) async fn open(uds: &Path, request: &HostMessage) -> Result<UnixStream, AgentError> {
    let mut stream = vsock::connect(uds, AGENT_PORT)
        .await
        .map_err(AgentError::Connect)?;
    let mut frames = Vec::new();
    let hello = HostMessage::Hello {
        version: PROTOCOL_VERSION,
    };
    encode_frame(&hello, &mut frames)?;
    encode_frame(request, &mut frames)?;
    stream
        .write_all(&frames)
        .await
        .map_err(|e| AgentError::Frame(FrameError::Io(e)))?;
    match next_message(&mut stream).await? {
        GuestMessage::Hello { version, .. } => {
            check_version(version).map_err(AgentError::Remote)?;
            Ok(stream)
        }
        GuestMessage::Error(e) => Err(AgentError::Remote(e)),
        other => Err(unexpected("hello", &other)),
    }
}

pub(crate) fn unexpected(expected: &'static str, got: &GuestMessage) -> AgentError {
    let got = format!("{got:?}");
    AgentError::Unexpected {
        expected,
        got: got.chars().take(80).collect(),
    }
}

#[cfg(test)]
mod tests {
    use hearth_agent_proto::ErrorCode;

    use super::*;

    /// An agent from another release says hello with another version: the host answers with
    /// its own (so the agent can report it too) and fails with the mismatch.
    #[tokio::test]
    async fn test_ready_hello_with_other_version_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ready.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let agent = tokio::spawn(async move {
            let mut stream = UnixStream::connect(&path).await.unwrap();
            let hello = GuestMessage::Hello {
                version: PROTOCOL_VERSION + 1,
                agent_version: "9.9.9".to_owned(),
            };
            write_frame_async(&mut stream, &hello).await.unwrap();
            read_frame_async::<HostMessage, _>(&mut stream)
                .await
                .unwrap()
        });
        let err = accept_ready(&listener).await.unwrap_err();
        let AgentError::Remote(remote) = &err else {
            panic!("unexpected error {err:?}");
        };
        assert_eq!(remote.code, ErrorCode::VersionMismatch);
        assert!(remote.to_string().contains("hearth setup"), "{remote}");
        assert_eq!(
            agent.await.unwrap(),
            Some(HostMessage::Hello {
                version: PROTOCOL_VERSION
            })
        );
    }
}
