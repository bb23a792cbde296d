//! Fifty clients at once through the API, each creating a networked sandbox, running a
//! command in it and deleting it: every one gets its own sandbox and its own answer, and
//! nothing of any of them (process, run dir, namespace, link, nftables table) is left.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::json;

use super::ApiServer;
use crate::host;

const CLIENTS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_api_fifty_concurrent_creates_execs_and_deletes() {
    let host = host();
    let server = ApiServer::start(&host, &[]);
    let key = server.new_key.clone().expect("new key");
    let clients = (0..CLIENTS).map(|i| {
        let api = server.client(Some(&key));
        tokio::spawn(async move {
            let (status, created) = api
                .post(
                    "/v1/sandboxes",
                    json!({"name": format!("burst-{i}"), "memory_mib": 256,
                           "labels": {"client": i.to_string()}}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "client {i}: {created}");
            let id = created["id"].as_str().expect("an id").to_owned();
            let said = api
                .sh(&id, &format!("echo client-$(( {i} * 2 )); hostname"))
                .await;
            let mut lines = said.lines();
            assert_eq!(
                lines.next(),
                Some(&*format!("client-{}", i * 2)),
                "client {i}"
            );
            let hostname = lines.next().expect("a hostname").to_owned();
            let (status, body) = api.delete(&format!("/v1/sandboxes/{id}?force=true")).await;
            assert_eq!(status, StatusCode::NO_CONTENT, "client {i}: {body}");
            (id, hostname)
        })
    });
    let mut ids = BTreeSet::new();
    let mut hostnames = BTreeSet::new();
    for client in futures::future::join_all(clients).await {
        let (id, hostname) = client.expect("a client panicked");
        ids.insert(id);
        hostnames.insert(hostname);
    }
    assert_eq!(ids.len(), CLIENTS, "every client got its own sandbox");
    assert_eq!(
        hostnames.len(),
        CLIENTS,
        "and each answer came from its own guest"
    );

    let api = server.client(Some(&key));
    let (_, listed) = api.get("/v1/sandboxes").await;
    assert_eq!(listed, json!([]), "all deleted");
    drop(server);
    host.assert_clean();
    let tables = std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        .expect("nft (installed by install.sh) runs");
    let tables = String::from_utf8_lossy(&tables.stdout);
    for id in &ids {
        let netns = std::path::Path::new("/run/netns").join(format!("hearth-{id}"));
        assert!(!netns.exists(), "{} left", netns.display());
        let link = std::path::Path::new("/sys/class/net").join(format!("hth{id}"));
        assert!(!link.exists(), "{} left", link.display());
        assert!(
            !tables.contains(&format!("hearth-{id}")),
            "table of {id} left: {tables}"
        );
    }
}
