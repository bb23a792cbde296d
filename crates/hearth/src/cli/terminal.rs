//! The host terminal: raw mode for `-t`, and its size.

use std::io::IsTerminal;
use std::os::fd::AsFd;

use hearth_engine::TermSize;
use nix::sys::termios::{self, SetArg, Termios};

/// Puts stdin's terminal in raw mode and restores it when dropped, so keys like Ctrl-C reach
/// the guest's terminal instead of signalling hearth.
#[derive(Debug)]
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Enters raw mode if stdin is a terminal; `None` otherwise.
    pub fn enter() -> nix::Result<Option<RawMode>> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Ok(None);
        }
        let saved = termios::tcgetattr(stdin.as_fd())?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)?;
        Ok(Some(RawMode { saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// Prompts on stderr and reads one line from stdin's terminal with echo off (a password).
pub fn read_secret(prompt: &str) -> std::io::Result<String> {
    let stdin = std::io::stdin();
    let saved = termios::tcgetattr(stdin.as_fd())?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(termios::LocalFlags::ECHO);
    eprint!("{prompt}");
    termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &quiet)?;
    let mut line = String::new();
    let read = stdin.read_line(&mut line);
    let restored = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &saved);
    eprintln!();
    read?;
    restored?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Size of the terminal on stdin (or stdout), else the classic 24x80.
pub fn size() -> TermSize {
    let size = terminal_size::terminal_size_of(std::io::stdin())
        .or_else(|| terminal_size::terminal_size_of(std::io::stdout()));
    match size {
        Some((terminal_size::Width(cols), terminal_size::Height(rows))) => TermSize { rows, cols },
        None => TermSize { rows: 24, cols: 80 },
    }
}
