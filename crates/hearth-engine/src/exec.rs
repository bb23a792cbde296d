//! One process running in the guest: its input side and its output stream.

use hearth_agent_proto::{
    write_frame_async, ErrorCode, ExecRequest, ExitStatus, GuestMessage, HostMessage, TermSize,
    MAX_CHUNK_LEN,
};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::agent::{self, AgentError};

/// What a running exec produces, in order; `Exited` is last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exited(ExitStatus),
}

/// Sends input and control to a running guest process. Dropping it half-closes the connection;
/// the output keeps coming.
#[derive(Debug)]
pub struct ExecInput {
    writer: OwnedWriteHalf,
}

/// Receives a running guest process's output and exit status.
#[derive(Debug)]
pub struct ExecOutput {
    reader: OwnedReadHalf,
    done: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("failed to start `{program}` in the guest")]
    Start {
        program: String,
        #[source]
        source: AgentError,
    },
    #[error("lost the connection to the guest process")]
    Stream(#[source] AgentError),
}

impl ExecError {
    /// The exit status docker gives for this failure: 127 not found, 126 not executable, 125
    /// for hearth's own failures.
    pub fn exit_code(&self) -> i32 {
        match self {
            ExecError::Start {
                source: AgentError::Remote(remote),
                ..
            } => match remote.code {
                ErrorCode::NotFound => 127,
                ErrorCode::PermissionDenied => 126,
                _ => 125,
            },
            _ => 125,
        }
    }
}

/// Starts `request` over a fresh agent connection.
pub(crate) async fn start(
    uds: &std::path::Path,
    request: ExecRequest,
) -> Result<(u32, ExecInput, ExecOutput), ExecError> {
    let program = request.argv.first().cloned().unwrap_or_default();
    let start_error = |source| ExecError::Start {
        program: program.clone(),
        source,
    };
    let mut stream = agent::open(uds, &HostMessage::Exec(request))
        .await
        .map_err(start_error)?;
    let pid = match agent::next_message(&mut stream)
        .await
        .map_err(start_error)?
    {
        GuestMessage::Started { pid } => pid,
        GuestMessage::Error(e) => return Err(start_error(AgentError::Remote(e))),
        other => return Err(start_error(agent::unexpected("started", &other))),
    };
    let (reader, writer) = stream.into_split();
    Ok((
        pid,
        ExecInput { writer },
        ExecOutput {
            reader,
            done: false,
        },
    ))
}

impl ExecInput {
    /// Sends `data` to the process's stdin, split into frames the agent accepts.
    pub async fn stdin(&mut self, data: Vec<u8>) -> Result<(), ExecError> {
        if data.len() <= MAX_CHUNK_LEN {
            return self.send(HostMessage::Stdin(data)).await;
        }
        for chunk in data.chunks(MAX_CHUNK_LEN) {
            self.send(HostMessage::Stdin(chunk.to_vec())).await?;
        }
        Ok(())
    }

    pub async fn close_stdin(&mut self) -> Result<(), ExecError> {
        self.send(HostMessage::StdinEof).await
    }

    pub async fn resize(&mut self, size: TermSize) -> Result<(), ExecError> {
        self.send(HostMessage::Resize(size)).await
    }

    pub async fn signal(&mut self, signal: i32) -> Result<(), ExecError> {
        self.send(HostMessage::Signal(signal)).await
    }

    async fn send(&mut self, message: HostMessage) -> Result<(), ExecError> {
        write_frame_async(&mut self.writer, &message)
            .await
            .map_err(|e| ExecError::Stream(e.into()))
    }
}

impl ExecOutput {
    /// The next event; after `Exited` it returns `Ok(None)`.
    pub async fn next(&mut self) -> Result<Option<ExecEvent>, ExecError> {
        if self.done {
            return Ok(None);
        }
        let message = hearth_agent_proto::read_frame_async(&mut self.reader)
            .await
            .map_err(|e| ExecError::Stream(e.into()))?
            .ok_or(ExecError::Stream(AgentError::Closed))?;
        let event = match message {
            GuestMessage::Stdout(data) => ExecEvent::Stdout(data),
            GuestMessage::Stderr(data) => ExecEvent::Stderr(data),
            GuestMessage::Exited(status) => {
                self.done = true;
                ExecEvent::Exited(status)
            }
            GuestMessage::Error(e) => return Err(ExecError::Stream(AgentError::Remote(e))),
            other => return Err(ExecError::Stream(agent::unexpected("output", &other))),
        };
        Ok(Some(event))
    }
}
