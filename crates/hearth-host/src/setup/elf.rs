//! Just enough ELF to tell a static executable from a dynamic one: a dynamic one names an
//! interpreter (`PT_INTERP`), which does not exist inside a bare initramfs or image.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Bytes read from the start of a file; ELF and program headers sit well inside them.
const HEAD_LEN: u64 = 64 * 1024;

const PT_INTERP: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("failed to read `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{}` is not an ELF executable (or its program headers are not near its start)", path.display())]
    NotElf { path: PathBuf },
}

/// Whether the ELF executable at `path` needs a program interpreter (is dynamically linked).
pub(crate) fn needs_interpreter(path: &Path) -> Result<bool, ElfError> {
    let read_err = |source| ElfError::Read {
        path: path.to_owned(),
        source,
    };
    let mut head = Vec::new();
    File::open(path)
        .map_err(read_err)?
        .take(HEAD_LEN)
        .read_to_end(&mut head)
        .map_err(read_err)?;
    has_interp(&head).ok_or_else(|| ElfError::NotElf {
        path: path.to_owned(),
    })
}

/// Whether the program headers in `head` (the start of an ELF file) include `PT_INTERP`;
/// `None` when `head` is not an ELF file or is cut before the end of its program headers.
fn has_interp(head: &[u8]) -> Option<bool> {
    if head.get(..4)? != b"\x7fELF" {
        return None;
    }
    let is_64 = match head.get(4)? {
        1 => false,
        2 => true,
        _ => return None,
    };
    let little = match head.get(5)? {
        1 => true,
        2 => false,
        _ => return None,
    };
    let field = |offset: usize, len: usize| -> Option<u64> {
        let bytes = head.get(offset..offset + len)?;
        let mut value = 0u64;
        for i in 0..len {
            let byte = if little { bytes[len - 1 - i] } else { bytes[i] };
            value = (value << 8) | u64::from(byte);
        }
        Some(value)
    };
    let (phoff, phentsize, phnum) = if is_64 {
        (field(0x20, 8)?, field(0x36, 2)?, field(0x38, 2)?)
    } else {
        (field(0x1c, 4)?, field(0x2a, 2)?, field(0x2c, 2)?)
    };
    let phoff = usize::try_from(phoff).ok()?;
    let phentsize = usize::try_from(phentsize).ok()?;
    if phentsize < 4 {
        return None;
    }
    for index in 0..usize::try_from(phnum).ok()? {
        let p_type = field(phoff.checked_add(index.checked_mul(phentsize)?)?, 4)?;
        if p_type == u64::from(PT_INTERP) {
            return Some(true);
        }
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64-bit little-endian ELF header followed by program headers of the given types.
    fn elf64(p_types: &[u32]) -> Vec<u8> {
        const EHDR: usize = 64;
        const PHENT: usize = 56;
        let mut bytes = vec![0u8; EHDR + PHENT * p_types.len()];
        bytes[..4].copy_from_slice(b"\x7fELF");
        bytes[4] = 2;
        bytes[5] = 1;
        bytes[0x20..0x28].copy_from_slice(&(EHDR as u64).to_le_bytes());
        bytes[0x36..0x38].copy_from_slice(&(PHENT as u16).to_le_bytes());
        bytes[0x38..0x3a].copy_from_slice(&(p_types.len() as u16).to_le_bytes());
        for (i, p_type) in p_types.iter().enumerate() {
            let at = EHDR + i * PHENT;
            bytes[at..at + 4].copy_from_slice(&p_type.to_le_bytes());
        }
        bytes
    }

    #[test]
    fn test_has_interp_with_pt_interp_is_true() {
        // PT_PHDR, PT_INTERP, PT_LOAD: the order a dynamic executable has.
        assert_eq!(has_interp(&elf64(&[6, 3, 1])), Some(true));
    }

    #[test]
    fn test_has_interp_static_is_false() {
        assert_eq!(has_interp(&elf64(&[1, 1, 4])), Some(false));
    }

    #[test]
    fn test_has_interp_not_elf_is_none() {
        assert_eq!(has_interp(b"#!/bin/sh\necho hi\n"), None);
    }

    #[test]
    fn test_has_interp_truncated_program_headers_is_none() {
        let bytes = elf64(&[1, 3]);
        assert_eq!(has_interp(&bytes[..80]), None);
    }

    #[test]
    fn test_needs_interpreter_on_host_binaries() {
        // /bin/true is dynamically linked on Debian; busybox-static's /bin/busybox is static.
        assert!(needs_interpreter(Path::new("/bin/true")).unwrap());
        if Path::new("/bin/busybox").exists() {
            assert!(!needs_interpreter(Path::new("/bin/busybox")).unwrap());
        }
    }
}
