//! `hearth serve`: the HTTP API over this engine, until SIGINT or SIGTERM; `hearth mcp`: its
//! MCP tools on stdin/stdout.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use hearth_api::e2b::{E2bConfig, TokenKey};
use hearth_api::mcp::HearthMcp;
use hearth_api::{ApiKeys, AppState, ServeConfig, Server};
use hearth_engine::Engine;
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::args::{McpArgs, ServeArgs};

/// 4327 spells HEAR on a phone keypad.
const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 4327);

pub async fn serve(engine: Arc<Engine>, args: &ServeArgs) -> anyhow::Result<i32> {
    let keys = if args.no_auth {
        None
    } else if let Some(path) = &args.api_key_file {
        Some(ApiKeys::from_key_file(path)?)
    } else {
        let (keys, new_key) = ApiKeys::load_or_generate(engine.state().root())?;
        if let Some(key) = new_key {
            println!("api key (shown once, only its hash is kept): {key}");
        }
        Some(keys)
    };
    let listen = args
        .listen
        .or_else(|| args.unix.is_none().then_some(DEFAULT_LISTEN));
    let token_key = match (args.e2b_listen, args.computesdk_listen) {
        (None, None) => None,
        _ => Some(TokenKey::load_or_generate(engine.state().root())?),
    };
    let e2b = args
        .e2b_listen
        .zip(token_key.clone())
        .map(|(addr, token_key)| {
            let mut templates = E2bConfig::default_templates();
            templates.extend(args.e2b_template.iter().cloned());
            (
                addr,
                E2bConfig {
                    templates,
                    token_key,
                },
            )
        });
    let computesdk = args.computesdk_listen.zip(token_key);
    let config = ServeConfig {
        listen,
        unix: args.unix.clone(),
        keys,
        dns_upstream: args.dns_upstream,
        max_starts: args
            .max_starts
            .map_or_else(default_max_starts, |n| n as usize),
        e2b,
        computesdk,
        host_dirs: args.allow_host_dir.clone(),
    };
    let server = Server::bind(engine, config).await?;
    if let Some(addr) = server.local_addr() {
        println!("listening on http://{addr}");
    }
    if let Some(path) = &args.unix {
        println!("listening on unix:{}", path.display());
    }
    for (protocol, addr) in server.sdk_addrs() {
        println!("{protocol} listening on http://{addr}");
    }
    let mut terminate = signal(SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down; requests in flight finish first");
    };
    server.run(shutdown).await?;
    Ok(0)
}

/// Twice the CPUs: enough boots at once to keep them busy, not so many that each crawls.
fn default_max_starts() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get() * 2)
}

pub async fn mcp(engine: Arc<Engine>, args: &McpArgs) -> anyhow::Result<i32> {
    let app = AppState::new(engine, args.dns_upstream, default_max_starts());
    HearthMcp::new(app).serve_stdio().await?;
    Ok(0)
}
