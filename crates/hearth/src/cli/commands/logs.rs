//! `hearth logs`: the main process output of a detached sandbox, or its guest console.

use std::io::Write;
use std::time::Duration;

use hearth_engine::{Engine, LogKind};

use crate::cli::args::LogsArgs;

const FOLLOW_POLL: Duration = Duration::from_millis(200);

pub async fn logs(engine: &Engine, args: &LogsArgs) -> anyhow::Result<i32> {
    let kind = if args.console {
        LogKind::Console
    } else {
        LogKind::Output
    };
    let mut reader = engine.logs(&args.sandbox, kind)?;
    loop {
        print(&reader.read_new()?);
        // Read the state after printing, so output written just before the end is not lost.
        if !args.follow || !engine.log_is_live(&reader)? {
            print(&reader.read_new()?);
            return Ok(0);
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

/// A closed pipe (`| head`) is a normal end, not an error.
fn print(bytes: &[u8]) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(bytes).and_then(|()| stdout.flush());
}
