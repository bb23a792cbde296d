//! Length-prefixed frames: a `u32` little-endian body length, then a postcard body.
//!
//! The length is checked against [`MAX_FRAME_LEN`] before any buffer is allocated, so a corrupt
//! or hostile peer cannot make either side allocate without bound.

use std::io::{self, Read, Write};

use serde::{de::DeserializeOwned, Serialize};

/// Largest frame body accepted: a data chunk plus generous room for framing and an exec request.
pub const MAX_FRAME_LEN: usize = 1024 * 1024;

const HEADER_LEN: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {MAX_FRAME_LEN} bytes")]
    TooLarge { len: usize },
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("failed to encode a frame body")]
    Encode(#[source] postcard::Error),
    #[error("failed to decode a frame body")]
    Decode(#[source] postcard::Error),
    #[error("failed to read or write a frame")]
    Io(#[source] io::Error),
}

/// Appends one frame holding `message` to `out`.
pub fn encode_frame<T: Serialize>(message: &T, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let body = postcard::to_stdvec(message).map_err(FrameError::Encode)?;
    let len = body.len();
    let header = match u32::try_from(len) {
        Ok(header) if len <= MAX_FRAME_LEN => header,
        _ => return Err(FrameError::TooLarge { len }),
    };
    out.extend_from_slice(&header.to_le_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

/// Decodes the first frame in `buf`. Returns the message and the bytes it used, or `None` when
/// `buf` does not yet hold a whole frame.
pub fn decode_frame<T: DeserializeOwned>(buf: &[u8]) -> Result<Option<(T, usize)>, FrameError> {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = body_len(*header)?;
    let Some(body) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
        return Ok(None);
    };
    let message = postcard::from_bytes(body).map_err(FrameError::Decode)?;
    Ok(Some((message, HEADER_LEN + len)))
}

fn body_len(header: [u8; HEADER_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge { len });
    }
    Ok(len)
}

/// Reads one frame. `Ok(None)` means the peer closed the connection cleanly between frames.
pub fn read_frame<T: DeserializeOwned, R: Read>(reader: &mut R) -> Result<Option<T>, FrameError> {
    let mut header = [0; HEADER_LEN];
    match read_exact_or_eof(reader, &mut header)? {
        Filled::Empty => return Ok(None),
        Filled::Partial => return Err(FrameError::Truncated),
        Filled::Full => {}
    }
    let mut body = vec![0; body_len(header)?];
    if read_exact_or_eof(reader, &mut body)? != Filled::Full {
        return Err(FrameError::Truncated);
    }
    postcard::from_bytes(&body)
        .map(Some)
        .map_err(FrameError::Decode)
}

/// Writes one frame and flushes it.
pub fn write_frame<T: Serialize, W: Write>(writer: &mut W, message: &T) -> Result<(), FrameError> {
    let mut buf = Vec::new();
    encode_frame(message, &mut buf)?;
    writer.write_all(&buf).map_err(FrameError::Io)?;
    writer.flush().map_err(FrameError::Io)
}

#[derive(Debug, PartialEq, Eq)]
enum Filled {
    Empty,
    Partial,
    Full,
}

fn read_exact_or_eof<R: Read>(reader: &mut R, buf: &mut [u8]) -> Result<Filled, FrameError> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    Ok(match filled {
        0 if !buf.is_empty() => Filled::Empty,
        n if n == buf.len() => Filled::Full,
        _ => Filled::Partial,
    })
}

/// Async twin of [`read_frame`] for the host.
#[cfg(feature = "tokio")]
pub async fn read_frame_async<T, R>(reader: &mut R) -> Result<Option<T>, FrameError>
where
    T: DeserializeOwned,
    R: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;

    let mut header = [0; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        match reader.read(&mut header[filled..]).await {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => filled += n,
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    let mut body = vec![0; body_len(header)?];
    reader.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            FrameError::Truncated
        } else {
            FrameError::Io(e)
        }
    })?;
    postcard::from_bytes(&body)
        .map(Some)
        .map_err(FrameError::Decode)
}

/// Async twin of [`write_frame`] for the host.
#[cfg(feature = "tokio")]
pub async fn write_frame_async<T, W>(writer: &mut W, message: &T) -> Result<(), FrameError>
where
    T: Serialize,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;

    let mut buf = Vec::new();
    encode_frame(message, &mut buf)?;
    writer.write_all(&buf).await.map_err(FrameError::Io)?;
    writer.flush().await.map_err(FrameError::Io)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::message::{ExecRequest, FsRequest, GuestMessage, HostMessage, TermSize};

    fn host_message() -> impl Strategy<Value = HostMessage> {
        prop_oneof![
            any::<u32>().prop_map(|version| HostMessage::Hello { version }),
            proptest::collection::vec(any::<u8>(), 0..4096).prop_map(HostMessage::Stdin),
            (any::<u16>(), any::<u16>())
                .prop_map(|(rows, cols)| HostMessage::Resize(TermSize { rows, cols })),
            any::<i32>().prop_map(HostMessage::Signal),
            (
                proptest::collection::vec(".*", 0..4),
                proptest::collection::vec(".*", 0..4),
                proptest::option::of(".*"),
                any::<bool>(),
                proptest::option::of(".*")
            )
                .prop_map(|(argv, env, cwd, stdin, user)| HostMessage::Exec(
                    ExecRequest {
                        argv,
                        env,
                        cwd,
                        tty: None,
                        stdin,
                        user
                    }
                )),
            Just(HostMessage::StdinEof),
            Just(HostMessage::Shutdown),
            (".*", any::<u32>(), any::<bool>()).prop_map(|(path, mode, parents)| {
                HostMessage::Fs(FsRequest::Mkdir {
                    path,
                    mode,
                    parents,
                })
            }),
            (".*", any::<u32>())
                .prop_map(|(path, mode)| HostMessage::Fs(FsRequest::Write { path, mode })),
            ".*".prop_map(|path| HostMessage::Fs(FsRequest::Read { path })),
            proptest::collection::vec(any::<u8>(), 0..4096).prop_map(HostMessage::Data),
            Just(HostMessage::DataEnd),
        ]
    }

    proptest! {
        #[test]
        fn test_frame_round_trip(messages in proptest::collection::vec(host_message(), 1..8)) {
            let mut buf = Vec::new();
            for m in &messages {
                encode_frame(m, &mut buf).unwrap();
            }
            let mut reader = &buf[..];
            for m in &messages {
                let got: HostMessage = read_frame(&mut reader).unwrap().unwrap();
                prop_assert_eq!(&got, m);
            }
            prop_assert!(read_frame::<HostMessage, _>(&mut reader).unwrap().is_none());
        }

        #[test]
        fn test_truncated_frame_is_an_error(message in host_message(), cut in 1usize..64) {
            let mut buf = Vec::new();
            encode_frame(&message, &mut buf).unwrap();
            let cut = cut.min(buf.len() - 1);
            let mut reader = &buf[..buf.len() - cut];
            prop_assert!(matches!(
                read_frame::<HostMessage, _>(&mut reader),
                Err(FrameError::Truncated)
            ));
            prop_assert!(decode_frame::<HostMessage>(&buf[..buf.len() - cut]).unwrap().is_none());
        }

        #[test]
        fn test_random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_frame::<GuestMessage>(&bytes);
            let _ = read_frame::<GuestMessage, _>(&mut &bytes[..]);
        }
    }

    #[test]
    fn test_oversized_length_rejected_before_allocation() {
        // A header claiming 4 GiB must fail on the header alone, not by allocating.
        let buf = u32::MAX.to_le_bytes();
        assert!(matches!(
            read_frame::<GuestMessage, _>(&mut &buf[..]),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(matches!(
            decode_frame::<GuestMessage>(&buf),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn test_oversized_message_refused_on_encode() {
        let mut buf = vec![1, 2, 3];
        let huge = HostMessage::Stdin(vec![0; MAX_FRAME_LEN + 1]);
        assert!(matches!(
            encode_frame(&huge, &mut buf),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(
            buf,
            [1, 2, 3],
            "a refused frame leaves the buffer as it was"
        );
    }
}
