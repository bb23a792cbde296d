//! `hearth logs`: the main process output of a detached sandbox, or its guest console.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use hearth_engine::paths::StateDir;
use hearth_engine::state::StateDb;
use hearth_engine::vmm::console::rotated_path;

use crate::cli::args::LogsArgs;

const FOLLOW_POLL: Duration = Duration::from_millis(200);

pub async fn logs(state: &StateDir, args: &LogsArgs) -> anyhow::Result<i32> {
    let db = StateDb::open(&state.database())?;
    let id = db.find(&args.sandbox)?.id;
    let path = if args.console {
        hearth_engine::supervisor::console_path(state, &id)
    } else {
        hearth_engine::supervisor::log_path(state, &id)
    };
    // Both logs rotate: the older half first; following continues in the current file.
    print_from(&rotated_path(&path), 0)?;
    let mut offset = 0;
    loop {
        offset = print_from(&path, offset)?;
        // Read the state after printing, so output written just before the end is not lost.
        if !args.follow || !db.find(&id)?.state.is_live() {
            print_from(&path, offset)?;
            return Ok(0);
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

/// Prints the log from `offset` on and returns the new end. A missing log is empty; a closed
/// pipe (`| head`) is a normal end. A log shorter than `offset` was rotated (the console):
/// the rest of the rotated part is printed, then the new file from its start.
fn print_from(path: &Path, mut offset: u64) -> anyhow::Result<u64> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(offset),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let len = file
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if len < offset {
        print_from(&rotated_path(path), offset)?;
        offset = 0;
    }
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(&bytes).and_then(|()| stdout.flush());
    Ok(offset + bytes.len() as u64)
}
