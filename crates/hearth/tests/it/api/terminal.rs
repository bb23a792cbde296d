//! Terminals over WebSocket against a real VM: bytes both ways, resize, several at once, the
//! exit status, refusals before the upgrade, and a client that vanishes mid-terminal.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{error_code, ApiServer};
use crate::host;

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(server: &ApiServer, key: &str, path_and_query: &str) -> Socket {
    let url = format!("{}{path_and_query}", server.url.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let (socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket upgrade");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    socket
}

/// Reads terminal output until it holds `want`, up to 60 s; everything read.
async fn read_until(socket: &mut Socket, want: &[u8]) -> Vec<u8> {
    let mut seen = Vec::new();
    let read = async {
        while !seen.windows(want.len()).any(|w| w == want) {
            match socket.next().await {
                Some(Ok(Message::Binary(data))) => seen.extend_from_slice(&data),
                Some(Ok(Message::Text(text))) => panic!("control before the output: {text}"),
                Some(Ok(_)) => {}
                other => panic!("the terminal ended early: {other:?}"),
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .is_err()
    {
        panic!(
            "no {:?} in the output: {:?}",
            String::from_utf8_lossy(want),
            String::from_utf8_lossy(&seen)
        );
    }
    seen
}

/// The `exit` (or `error`) message the server sends last, skipping output before it.
async fn final_message(socket: &mut Socket) -> Value {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
            Some(Ok(_)) => {}
            other => panic!("closed without a final message: {other:?}"),
        }
    }
}

async fn type_line(socket: &mut Socket, line: &str) {
    socket
        .send(Message::Binary(format!("{line}\n").into_bytes().into()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_api_terminals_over_websocket() {
    let host = host();
    let server = ApiServer::start(&host, &[]);
    let key = server.new_key.clone().expect("new key");
    let api = server.client(Some(&key));
    let (status, created) = api
        .post(
            "/v1/sandboxes",
            json!({"name": "tty", "network": {"mode": "none"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");

    // Refusals come as HTTP errors, before any upgrade.
    for (path, want) in [
        ("/v1/sandboxes/nope/terminal", StatusCode::NOT_FOUND),
        ("/v1/sandboxes/tty/terminal", StatusCode::BAD_REQUEST),
    ] {
        let (status, body) = api.get(path).await;
        assert_eq!(status, want, "{path}: {body}");
        error_code(&body);
    }
    let url = format!(
        "{}/v1/sandboxes/tty/terminal?rows=0",
        server.url.replacen("http", "ws", 1)
    );
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let refused = tokio_tungstenite::connect_async(request).await;
    assert!(
        matches!(&refused, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == StatusCode::BAD_REQUEST),
        "rows=0: {refused:?}"
    );

    // Two terminals at once, each its own shell on its own PTY.
    let mut first = open(&server, &key, "/v1/sandboxes/tty/terminal?rows=30&cols=100").await;
    let mut second = open(&server, &key, "/v1/sandboxes/tty/terminal").await;
    type_line(&mut first, "stty size; echo first-$((40+2))").await;
    let seen = read_until(&mut first, b"first-42").await;
    assert!(
        String::from_utf8_lossy(&seen).contains("30 100"),
        "{seen:?}"
    );
    type_line(&mut second, "tty; echo second-$((40+3))").await;
    let seen = read_until(&mut second, b"second-43").await;
    assert!(
        String::from_utf8_lossy(&seen).contains("/dev/pts/"),
        "{seen:?}"
    );

    first
        .send(Message::Text(
            json!({"type": "resize", "rows": 50, "cols": 132})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    // A bad control message is ignored, not fatal.
    first
        .send(Message::Text("{\"type\":\"nonsense\"}".into()))
        .await
        .unwrap();
    type_line(&mut first, "stty size; echo resized-$((1+1))").await;
    let seen = read_until(&mut first, b"resized-2").await;
    assert!(
        String::from_utf8_lossy(&seen).contains("50 132"),
        "{seen:?}"
    );

    // Binary-safe: bytes that are not UTF-8 come out as they are.
    type_line(&mut first, "printf 'bin:\\377\\001\\376:%s' $((6*7))").await;
    let seen = read_until(&mut first, b":42").await;
    assert!(
        seen.windows(8).any(|w| w == b"bin:\xff\x01\xfe:"),
        "{:?}",
        String::from_utf8_lossy(&seen)
    );

    // The exit status ends the terminal.
    type_line(&mut first, "exit 7").await;
    let last = final_message(&mut first).await;
    assert_eq!(
        last,
        json!({"type": "exit", "exit_code": 7, "signal": null})
    );

    // A client that vanishes mid-terminal leaves no guest process behind.
    type_line(&mut second, "sleep 4242").await;
    assert!(
        api.until_running("tty", "sleep 4242", true).await,
        "the sleep started"
    );
    drop(second);
    assert!(
        api.until_none_run("tty", "sleep 4242").await,
        "the abandoned terminal's processes were killed"
    );

    let (status, _) = api.post("/v1/sandboxes/tty/stop", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    let (status, refused) = api.get("/v1/sandboxes/tty/terminal").await;
    assert_eq!(
        (status, error_code(&refused)),
        (StatusCode::CONFLICT, "conflict")
    );
    let (status, _) = api.delete("/v1/sandboxes/tty").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    drop(server);
    host.assert_clean();
}
