//! `hearth ls` and `hearth inspect`: what the state database knows; `inspect` adds the
//! sandbox's network from its spec and the host.

use std::time::{SystemTime, UNIX_EPOCH};

use hearth_engine::Engine;

use crate::cli::args::{LsArgs, SandboxesArgs};

pub fn ls(engine: &Engine, args: &LsArgs) -> anyhow::Result<i32> {
    let mut records = engine.list(args.all)?;
    records.retain(|r| args.labels.iter().all(|selector| selector.matches(r)));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(0);
    }
    println!(
        "{:<12}  {:<24}  {:<10}  {:<16}  {:<10}  {:<9}  {:>4}  {:>7}",
        "ID", "NAME", "IMAGE", "STATE", "CREATED", "BACKEND", "CPUS", "MEMORY"
    );
    for r in &records {
        let state = match (r.exit_code, r.health) {
            (Some(code), _) if !r.state.is_live() => format!("{} ({code})", r.state),
            (_, Some(health)) if r.state.is_live() => format!("{} ({health})", r.state),
            _ => r.state.to_string(),
        };
        println!(
            "{:<12}  {:<24}  {:<10}  {:<16}  {:<10}  {:<9}  {:>4}  {:>6}M",
            r.id,
            r.name,
            r.image,
            state,
            age(r.created_at),
            r.backend,
            r.vcpus,
            r.mem_size_mib
        );
    }
    Ok(0)
}

pub fn inspect(engine: &Engine, args: &SandboxesArgs) -> anyhow::Result<i32> {
    let mut inspected = Vec::with_capacity(args.sandboxes.len());
    for query in &args.sandboxes {
        inspected.push(engine.inspect(query)?);
    }
    println!("{}", serde_json::to_string_pretty(&inspected)?);
    Ok(0)
}

/// `5s ago`, `3m ago`, `2h ago`, `4d ago`.
fn age(created_at: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let secs = (now - created_at).max(0);
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}
