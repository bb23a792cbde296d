//! Errors as one line of text, for the state database and log lines, where a chain of causes
//! cannot be kept as values.

/// An error and its causes on one line, for the state database and logs.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    parts.join(": ")
}
