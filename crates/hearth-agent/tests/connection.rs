//! The connection handshake and the non-exec requests.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{connect, connect_with};
use hearth_agent::server::Context;
use hearth_agent_proto::{ErrorCode, GuestMessage, HostMessage, PROTOCOL_VERSION};

#[test]
fn test_hello_then_ping_gets_pong() {
    let mut host = connect();
    host.hello();
    host.send(&HostMessage::Ping);
    assert_eq!(host.recv(), Some(GuestMessage::Pong));
    assert_eq!(host.recv(), None);
    host.finish();
}

#[test]
fn test_hello_reports_agent_version() {
    let mut host = connect();
    host.send(&HostMessage::Hello {
        version: PROTOCOL_VERSION,
    });
    let Some(GuestMessage::Hello { agent_version, .. }) = host.recv() else {
        panic!("expected Hello");
    };
    assert_eq!(agent_version, env!("CARGO_PKG_VERSION"));
    host.finish();
}

#[test]
fn test_hello_version_mismatch_is_an_error_then_close() {
    let mut host = connect();
    host.send(&HostMessage::Hello {
        version: PROTOCOL_VERSION + 1,
    });
    let Some(GuestMessage::Error(e)) = host.recv() else {
        panic!("expected Error");
    };
    assert_eq!(e.code, ErrorCode::VersionMismatch);
    assert_eq!(host.recv(), None);
    host.finish();
}

#[test]
fn test_request_before_hello_is_bad_request() {
    let mut host = connect();
    host.send(&HostMessage::Ping);
    let Some(GuestMessage::Error(e)) = host.recv() else {
        panic!("expected Error");
    };
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert_eq!(host.recv(), None);
    host.finish();
}

#[test]
fn test_input_frame_as_request_is_bad_request() {
    let mut host = connect();
    host.hello();
    host.send(&HostMessage::StdinEof);
    let Some(GuestMessage::Error(e)) = host.recv() else {
        panic!("expected Error");
    };
    assert_eq!(e.code, ErrorCode::BadRequest);
    host.finish();
}

#[test]
fn test_host_closing_before_hello_is_not_an_error() {
    connect().finish();
}

#[test]
fn test_garbage_frame_drops_the_connection() {
    use std::io::Write;
    let mut host = connect();
    // A frame header announcing 3 bytes that are not a postcard HostMessage.
    host.stream
        .write_all(&[3, 0, 0, 0, 0xff, 0xff, 0xff])
        .unwrap();
    assert_eq!(host.recv(), None);
    host.hang_up();
}

#[test]
fn test_shutdown_replies_then_runs_shutdown_action() {
    let shut_down = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&shut_down);
    let mut host = connect_with(Context::new(move || flag.store(true, Ordering::SeqCst)));
    host.hello();
    host.send(&HostMessage::Shutdown);
    assert_eq!(host.recv(), Some(GuestMessage::ShuttingDown));
    host.finish();
    assert!(shut_down.load(Ordering::SeqCst));
}
