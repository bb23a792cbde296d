//! Console logging: stderr is `/dev/console`, which QEMU sends to the serial port.

use std::error::Error;
use std::fmt;
use std::io::Write;

/// Writes one `hearth-agent: `-prefixed line to stderr.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::log::write_line(format_args!($($arg)*))
    };
}

#[doc(hidden)]
pub fn write_line(args: fmt::Arguments<'_>) {
    // Nothing useful can be done when the console itself fails.
    let _ = writeln!(std::io::stderr().lock(), "hearth-agent: {args}");
}

/// Each message of an error's chain, outermost first.
pub fn chain(error: &dyn Error) -> Vec<String> {
    let mut messages = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        messages.push(cause.to_string());
        source = cause.source();
    }
    messages
}

/// An error's chain on one line, for the console.
pub fn one_line(error: &dyn Error) -> String {
    chain(error).join(": ")
}
