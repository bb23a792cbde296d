//! Which Firecracker a binary is, and whether hearth can drive it.

use std::fmt;

/// The oldest Firecracker hearth drives: its API has every request hearth sends at start-up
/// (the memory backend of `PUT /snapshot/load` included).
pub const MINIMUM: Version = Version {
    major: 1,
    minor: 10,
    patch: 0,
};

/// The oldest that restores a snapshot onto another tap (`network_overrides`).
pub const NETWORK_OVERRIDES: Version = Version {
    major: 1,
    minor: 12,
    patch: 0,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl Version {
    /// The version in `firecracker --version`'s first line, `Firecracker v1.16.1` (a build
    /// from a branch may add a suffix: `v1.13.0-dev`).
    pub fn from_version_line(line: &str) -> Option<Self> {
        Self::after(line, "Firecracker v")
    }

    /// The version in `jailer --version`'s first line, `Jailer v1.16.1`.
    pub fn from_jailer_line(line: &str) -> Option<Self> {
        Self::after(line, "Jailer v")
    }

    fn after(line: &str, prefix: &str) -> Option<Self> {
        let rest = line.trim().strip_prefix(prefix)?;
        let core = rest.split(['-', '+', ' ']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
        let version = Version {
            major: parts.next()??,
            minor: parts.next()??,
            patch: parts.next()??,
        };
        parts.next().is_none().then_some(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_version_lines() {
        assert_eq!(
            Version::from_version_line("Firecracker v1.16.1\n"),
            Some(Version {
                major: 1,
                minor: 16,
                patch: 1
            })
        );
        assert_eq!(
            Version::from_version_line("Firecracker v1.13.0-dev").map(|v| v.to_string()),
            Some("1.13.0".to_owned())
        );
        for bad in [
            "Jailer v1.16.1",
            "Firecracker 1.16.1",
            "Firecracker v1.16",
            "Firecracker v1.16.1.2",
            "",
        ] {
            assert_eq!(Version::from_version_line(bad), None, "{bad}");
        }
    }

    #[test]
    fn test_jailer_lines_are_their_own() {
        assert_eq!(
            Version::from_jailer_line("Jailer v1.10.0").map(|v| v.to_string()),
            Some("1.10.0".to_owned())
        );
        assert_eq!(Version::from_jailer_line("Firecracker v1.10.0"), None);
    }

    #[test]
    fn test_minimum_ordering() {
        let old = Version::from_version_line("Firecracker v1.9.1").unwrap();
        let new = Version::from_version_line("Firecracker v1.10.0").unwrap();
        assert!(old < MINIMUM && new >= MINIMUM && MINIMUM < NETWORK_OVERRIDES);
    }
}
