//! Domain names on an allowlist: `example.com` (that name only) or `*.example.com` (every name
//! below it, not `example.com` itself, as a DNS wildcard). Checked when parsed, so a typo is an
//! error before any VM starts; names are kept lowercase, without the root dot, and matched
//! label by label.

use std::fmt;
use std::str::FromStr;

use hickory_proto::rr::Name;

/// DNS limits (RFC 1035 §2.3.4): 63 bytes a label, 253 for the dotted name.
const MAX_LABEL_LEN: usize = 63;
const MAX_NAME_LEN: usize = 253;

/// An allowlisted domain, exact or wildcard.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DomainPattern {
    /// The name, or for a wildcard the name below which everything matches.
    name: String,
    /// `name` as DNS labels, which queries are matched against: a label of a query may hold a
    /// dot (`x\.example` + `com`), so comparing text would confuse it with two labels.
    zone: Name,
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
        let mut zone = Name::from_ascii(name).map_err(|_| invalid("it is not a DNS name"))?;
        zone.set_fqdn(true);
        Ok(DomainPattern {
            name: name.to_owned(),
            zone: zone.to_lowercase(),
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
    /// Whether `name` (any case) is allowed by this pattern: label by label, the pattern's name
    /// itself when exact, a name with at least one more label below it when a wildcard.
    pub fn matches(&self, name: &Name) -> bool {
        if !self.zone.zone_of(name) {
            return false;
        }
        let (labels, zone_labels) = (name.iter().len(), self.zone.iter().len());
        if self.wildcard {
            labels > zone_labels
        } else {
            labels == zone_labels
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

    /// A query's name, as hickory reads it off the wire (`\.` is a dot inside a label).
    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn test_exact_domain_matches_itself_in_any_case_only() {
        let p = pattern("Example.TEST.");
        assert_eq!(p.to_string(), "example.test");
        assert!(p.matches(&name("example.test")));
        assert!(p.matches(&name("EXAMPLE.test.")));
        assert!(!p.matches(&name("www.example.test")));
        assert!(!p.matches(&name("badexample.test")));
    }

    #[test]
    fn test_wildcard_matches_names_below_but_not_the_apex() {
        let p = pattern("*.example.test");
        assert!(p.matches(&name("a.example.test")));
        assert!(p.matches(&name("a.b.example.test")));
        assert!(!p.matches(&name("example.test")));
        assert!(!p.matches(&name("aexample.test")));
        assert!(!p.matches(&name("example.test.evil")));
    }

    #[test]
    fn test_matching_is_by_label_not_by_escaped_text() {
        // One label `x.example` then `test`: not below example.test.
        let dotted = name(r"x\.example.test.");
        assert_eq!(dotted.iter().len(), 2);
        assert!(!pattern("*.example.test").matches(&dotted));
        assert!(!pattern("x.example.test").matches(&dotted));
        assert!(!pattern("*.test").matches(&name(r"a.x\.test.")));
        assert!(pattern("*.test").matches(&dotted));
        assert!(pattern("*.example.test").matches(&name(r"a\.b.example.test.")));
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
