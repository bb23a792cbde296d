//! Host side of the per-operation protocol: each operation is one connection to the sandbox's
//! agent socket (`vms/<id>/agent.sock`), which its owner relays as one channel of the agent's
//! session stream (see `agent_session` and `agent_relay`).

use std::path::{Path, PathBuf};

use hearth_agent_proto::session::SessionError;
use hearth_agent_proto::{
    check_version, encode_frame, read_frame_async, FrameError, GuestMessage, HostMessage,
    RemoteError, PROTOCOL_VERSION,
};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("failed to reach the guest agent through `{}`", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the guest agent did not answer the session hello within {0:?}")]
    ReadyTimeout(std::time::Duration),
    #[error("the agent's session stream broke its rules")]
    Session(#[from] SessionError),
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

/// Opens a connection for one operation: sends the hello and the operation's request together
/// (one write, no wait for the agent's hello first, which saves a round trip through the guest
/// on every exec), then checks the agent's hello. An agent of another version answers the
/// hello with an error and never reads the request.
pub(crate) async fn open(socket: &Path, request: &HostMessage) -> Result<UnixStream, AgentError> {
    let mut stream = UnixStream::connect(socket)
        .await
        .map_err(|source| AgentError::Connect {
            path: socket.to_owned(),
            source,
        })?;
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
