//! Text from a guest made safe for a terminal. Guest-made names, agent error messages, guest
//! `tar` stderr and the console tail of a boot error can hold escape sequences that would drive
//! the user's terminal (retitle it, rewrite lines, fake a prompt); every path that prints them
//! goes through here.

/// `text` with every control character as an escape, like `ls -b`: for one-line values.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `text` escaped like [`printable`], but its line breaks kept as breaks, each continuation
/// indented by `indent`: for error messages that carry a guest's multi-line output.
pub fn printable_lines(text: &str, indent: &str) -> String {
    text.lines()
        .map(printable)
        .collect::<Vec<_>>()
        .join(&format!("\n{indent}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_printable_escapes_terminal_controls() {
        assert_eq!(
            printable("a\u{1b}]0;pwned\u{7}b\rc\u{9b}2J"),
            "a\\u{1b}]0;pwned\\u{7}b\\rc\\u{9b}2J"
        );
    }

    #[test]
    fn test_printable_lines_keeps_breaks_and_escapes_the_rest() {
        assert_eq!(
            printable_lines("one\u{1b}[2J\ntwo\r", "  "),
            "one\\u{1b}[2J\n  two\\r"
        );
    }
}
