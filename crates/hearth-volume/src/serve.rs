//! The blocking loop that answers one channel's volume calls.

use std::io::{Read, Write};

use hearth_agent_proto::{encode_frame, read_frame, FrameError, GuestMessage, HostMessage};

use crate::VolumeServer;

/// Why [`serve`] stopped before the guest closed the channel.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("failed to read a volume call from the guest")]
    Read(#[source] FrameError),
    #[error("failed to encode the reply to volume call {id}")]
    Encode {
        id: u64,
        #[source]
        source: FrameError,
    },
    #[error("failed to send the reply to volume call {id}")]
    Write {
        id: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("expected a volume call from the guest, got a `{kind}` message")]
    Unexpected { kind: String },
}

/// Serves calls from `reader` (frames of GuestMessage) and writes replies (frames of
/// HostMessage) to `writer` until end of file; a frame that is not VolumeCall is a protocol
/// error -> return Err. Blocking, sequential.
pub fn serve<R: Read, W: Write>(
    server: &mut VolumeServer,
    reader: &mut R,
    writer: &mut W,
) -> Result<(), ServeError> {
    let mut frame = Vec::new();
    loop {
        let (id, op) = match read_frame::<GuestMessage, _>(reader).map_err(ServeError::Read)? {
            None => return Ok(()),
            Some(GuestMessage::VolumeCall { id, op }) => (id, op),
            Some(other) => {
                return Err(ServeError::Unexpected {
                    kind: variant_name(&other),
                })
            }
        };
        let Some(result) = server.call(op) else {
            continue;
        };
        frame.clear();
        let reply = HostMessage::VolumeReply { id, result };
        if let Err(FrameError::TooLarge { .. }) = encode_frame(&reply, &mut frame) {
            // The server bounds every reply well below the frame limit; should one ever
            // exceed it, the call fails rather than the whole mount.
            frame.clear();
            let reply = HostMessage::VolumeReply {
                id,
                result: Err(libc::EIO),
            };
            encode_frame(&reply, &mut frame).map_err(|source| ServeError::Encode { id, source })?;
        }
        writer
            .write_all(&frame)
            .and_then(|()| writer.flush())
            .map_err(|source| ServeError::Write { id, source })?;
    }
}

/// The message's variant name, without its (possibly large, guest-chosen) contents.
fn variant_name(message: &GuestMessage) -> String {
    let debug = format!("{message:?}");
    debug
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .next()
        .unwrap_or_default()
        .to_owned()
}
