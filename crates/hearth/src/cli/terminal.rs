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
/// The terminal stays in charge of nothing while it is read: Ctrl-C arrives as a byte and
/// ends the prompt with `Interrupted` after the terminal is restored, instead of killing hearth
/// with echo still off.
pub fn read_secret(prompt: &str) -> std::io::Result<String> {
    use std::io::Read;

    let stdin = std::io::stdin();
    let saved = termios::tcgetattr(stdin.as_fd())?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(
        termios::LocalFlags::ECHO | termios::LocalFlags::ICANON | termios::LocalFlags::ISIG,
    );
    quiet.control_chars[termios::SpecialCharacterIndices::VMIN as usize] = 1;
    quiet.control_chars[termios::SpecialCharacterIndices::VTIME as usize] = 0;
    eprint!("{prompt}");
    termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &quiet)?;
    let _restore = Restore(saved);
    let mut line = Vec::new();
    for byte in stdin.lock().bytes() {
        match byte? {
            b'\r' | b'\n' => break,
            // Ctrl-C, or Ctrl-D on an empty line.
            0x03 => return Err(interrupted("interrupted at the prompt")),
            0x04 if line.is_empty() => return Err(interrupted("no input at the prompt")),
            // Backspace (DEL or ^H) edits the invisible line.
            0x7f | 0x08 => {
                line.pop();
            }
            byte => line.push(byte),
        }
    }
    eprintln!();
    String::from_utf8(line).map_err(|_| std::io::Error::other("the input is not UTF-8"))
}

fn interrupted(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::Interrupted, why)
}

/// Puts the terminal's saved settings back when dropped.
struct Restore(termios::Termios);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.0);
    }
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
