//! `hearth gc`: remove what crashed sandboxes left behind.

use hearth_engine::Engine;

pub fn gc(engine: &Engine) -> anyhow::Result<i32> {
    let report = engine.gc()?;
    for id in &report.marked_exited {
        println!("sandbox {id}: supervisor gone, marked exited");
    }
    for pid in &report.killed_pids {
        println!("killed leftover process {pid}");
    }
    for dir in &report.removed_dirs {
        println!("removed {dir}");
    }
    for id in &report.removed_networks {
        println!("removed the network of sandbox {id}");
    }
    Ok(0)
}
