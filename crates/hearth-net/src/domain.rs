//! Domain names on an allowlist: `example.com` (that name only) or `*.example.com` (every name
//! below it, not `example.com` itself, as a DNS wildcard). Checked when parsed, so a typo is an
//! error before any VM starts; names are kept lowercase, without the root dot.

use std::fmt;
use std::str::FromStr;

/// DNS limits (RFC 1035 §2.3.4): 63 bytes a label, 253 for the dotted name.
const MAX_LABEL_LEN: usize = 63;
const MAX_NAME_LEN: usize = 253;

/// An allowlisted domain, exact or wildcard.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DomainPattern {
    /// The name, or for a wildcard the name below which everything matches.
    name: String,
    wildcard: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DomainError {
    #[error("`{value}` is not an IP address, CIDR or domain name: {reason}")]
    Invalid { value: String, reason: &'static str },
}

impl FromStr for DomainPattern {
    type Err = DomainError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| DomainError::Invalid {
            value: value.to_owned(),
            reason,
        };
        let lower = value.to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() {
            return Err(invalid("it has no labels"));
        }
        if !name.is_ascii() {
            return Err(invalid(
                "only ASCII names are accepted (give the xn-- form)",
            ));
        }
        if name.contains('*') {
            return Err(invalid(
                "`*` may only stand alone as the first label (`*.example.com`)",
            ));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(invalid("it is longer than 253 characters"));
        }
        for label in name.split('.') {
            check_label(label).map_err(invalid)?;
        }
        // A numeric last label would make `10.1.2` a "domain"; no top-level domain is numeric.
        if name
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(invalid(
                "its last label is all digits (an address needs 4 parts)",
            ));
        }
        Ok(DomainPattern {
            name: name.to_owned(),
            wildcard,
        })
    }
}

fn check_label(label: &str) -> Result<(), &'static str> {
    if label.is_empty() {
        return Err("it has an empty label (`..` or a leading dot)");
    }
    if label.len() > MAX_LABEL_LEN {
        return Err("a label is longer than 63 characters");
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("labels hold only letters, digits, `-` and `_`");
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err("a label starts or ends with `-`");
    }
    Ok(())
}

impl DomainPattern {
    /// Whether `name` (any case, with or without the root dot) is allowed by this pattern.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        if self.wildcard {
            name.strip_suffix(self.name.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
        } else {
            name == self.name
        }
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(s: &str) -> DomainPattern {
        s.parse().unwrap()
    }

    #[test]
    fn test_exact_domain_matches_itself_in_any_case_only() {
        let p = pattern("Example.TEST.");
        assert_eq!(p.to_string(), "example.test");
        assert!(p.matches("example.test"));
        assert!(p.matches("EXAMPLE.test."));
        assert!(!p.matches("www.example.test"));
        assert!(!p.matches("badexample.test"));
    }

    #[test]
    fn test_wildcard_matches_names_below_but_not_the_apex() {
        let p = pattern("*.example.test");
        assert!(p.matches("a.example.test"));
        assert!(p.matches("a.b.example.test"));
        assert!(!p.matches("example.test"));
        assert!(!p.matches("aexample.test"));
        assert!(!p.matches("example.test.evil"));
    }

    #[test]
    fn test_invalid_domains_are_refused_with_a_reason() {
        for bad in [
            "*.", "a..b", "*.*.x", "*", "a*.b", ".a.b", "-a.b", "a-.b", "10.1.2", "bü.de", "a b.c",
        ] {
            assert!(bad.parse::<DomainPattern>().is_err(), "{bad}");
        }
        let long_label = format!("{}.test", "a".repeat(64));
        assert!(long_label.parse::<DomainPattern>().is_err());
    }
}
