//! `hearth fs`: single files of a running sandbox through the agent's filesystem operations.

use hearth_engine::{Engine, EngineError, FileStat, FilesError};

use crate::cli::args::FsCommand;
use crate::cli::printable::printable;

pub async fn fs(engine: &Engine, command: FsCommand) -> anyhow::Result<i32> {
    match command {
        FsCommand::Stat(args) => {
            let target = &args.target;
            let stat = engine.stat(&target.sandbox, &target.path).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&stat)?);
            } else {
                print_stat(&args.target.path, &stat);
            }
        }
        FsCommand::Ls(args) => {
            let target = &args.target;
            let entries = engine.list_dir(&target.sandbox, &target.path).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                for entry in &entries {
                    println!("{}", long_line(entry));
                }
            }
        }
        FsCommand::Mkdir(args) => {
            let (target, mode) = (&args.target, args.mode);
            engine
                .mkdir(&target.sandbox, &target.path, mode, args.parents)
                .await?;
        }
        FsCommand::Rm(args) => {
            let target = &args.target;
            engine
                .remove_path(&target.sandbox, &target.path, args.recursive)
                .await?;
        }
        FsCommand::Cat(args) => {
            let target = &args.target;
            let mut stdout = tokio::io::stdout();
            match engine
                .read_file(&target.sandbox, &target.path, &mut stdout)
                .await
            {
                // A closed pipe (`| head`) is the reader being done, as for `cat`.
                Err(EngineError::Files(FilesError::LocalWrite(e)))
                    if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => {
                    other?;
                }
            }
        }
        FsCommand::Write(args) => {
            let target = &args.target;
            let mut stdin = tokio::io::stdin();
            engine
                .write_file(&target.sandbox, &target.path, args.mode, &mut stdin)
                .await?;
        }
    }
    Ok(0)
}

fn print_stat(path: &str, stat: &FileStat) {
    println!("path:  {}", printable(path));
    println!("kind:  {}", kind_name(stat));
    println!("size:  {}", stat.size);
    println!("mode:  {:04o} ({})", stat.mode, mode_string(stat));
    println!("owner: {}:{}", stat.uid, stat.gid);
    println!("mtime: {}", mtime(stat.mtime));
    if let Some(target) = &stat.link_target {
        println!("link:  {}", printable(target));
    }
}

fn kind_name(stat: &FileStat) -> &'static str {
    match stat.kind {
        hearth_engine::FileKind::File => "file",
        hearth_engine::FileKind::Dir => "directory",
        hearth_engine::FileKind::Symlink => "symlink",
        hearth_engine::FileKind::Other => "other",
    }
}

/// One `ls -l` style line.
fn long_line(entry: &FileStat) -> String {
    let mut line = format!(
        "{} {:>5} {:>5} {:>10} {} {}",
        mode_string(entry),
        entry.uid,
        entry.gid,
        entry.size,
        mtime(entry.mtime),
        printable(&entry.name)
    );
    if let Some(target) = &entry.link_target {
        line.push_str(&format!(" -> {}", printable(target)));
    }
    line
}

fn mtime(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0).map_or_else(
        || secs.to_string(),
        |t| t.format("%Y-%m-%d %H:%M").to_string(),
    )
}

/// `drwxr-xr-x`, with `s`/`t` for setuid, setgid and sticky as `ls` shows them.
fn mode_string(stat: &FileStat) -> String {
    let kind = match stat.kind {
        hearth_engine::FileKind::File => '-',
        hearth_engine::FileKind::Dir => 'd',
        hearth_engine::FileKind::Symlink => 'l',
        hearth_engine::FileKind::Other => '?',
    };
    let mode = stat.mode;
    let mut out = String::from(kind);
    for (shift, special, special_char) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (mode >> shift) & 0o7;
        out.push(if bits & 4 != 0 { 'r' } else { '-' });
        out.push(if bits & 2 != 0 { 'w' } else { '-' });
        let exec = bits & 1 != 0;
        out.push(match (mode & special != 0, exec) {
            (true, true) => special_char,
            (true, false) => special_char.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use hearth_engine::FileKind;

    use super::*;

    fn entry(kind: FileKind, mode: u32) -> FileStat {
        FileStat {
            name: "x".into(),
            kind,
            size: 3,
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
            link_target: None,
        }
    }

    #[test]
    fn test_mode_string_like_ls() {
        assert_eq!(mode_string(&entry(FileKind::Dir, 0o755)), "drwxr-xr-x");
        assert_eq!(mode_string(&entry(FileKind::File, 0o4755)), "-rwsr-xr-x");
        assert_eq!(mode_string(&entry(FileKind::Dir, 0o1777)), "drwxrwxrwt");
        assert_eq!(mode_string(&entry(FileKind::File, 0o2640)), "-rw-r-S---");
    }

    #[test]
    fn test_guest_names_cannot_drive_the_terminal() {
        let mut evil = entry(FileKind::File, 0o644);
        evil.name = "a\u{1b}]0;pwned\u{7}\nforged".into();
        let line = long_line(&evil);
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(line.ends_with(r"a\u{1b}]0;pwned\u{7}\nforged"), "{line}");
    }

    #[test]
    fn test_long_line_shows_link_target_and_utc_time() {
        let mut link = entry(FileKind::Symlink, 0o777);
        link.link_target = Some("/etc/hosts".into());
        assert_eq!(
            long_line(&link),
            "lrwxrwxrwx     0     0          3 1970-01-01 00:00 x -> /etc/hosts"
        );
    }
}
