//! The uncompressed kernel Firecracker boots: on x86_64 it loads only an ELF `vmlinux`, and
//! distributions ship a bzImage. The bzImage's setup header says where its compressed payload
//! is (boot protocol 2.08 and later), so no scanning for magic numbers is needed.
//!
//! By hand because no crate unpacks a bzImage; the decompressors are crates (flate2, zstd,
//! lz4_flex). LZ4 needs a little framing of our own: the kernel uses LZ4's legacy frame
//! (`lz4 -l`), which lz4_flex does not read, around plain LZ4 blocks, which it does.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::fingerprint::AtomicFile;

const ELF_MAGIC: &[u8] = b"\x7fELF";

/// Offsets into the bzImage's setup header (Documentation/arch/x86/boot.rst).
const SETUP_SECTS: usize = 0x1f1;
const HEADER_MAGIC: usize = 0x202;
const PROTOCOL_VERSION: usize = 0x206;
const PAYLOAD_OFFSET: usize = 0x248;
const PAYLOAD_LENGTH: usize = 0x24c;
/// `payload_offset`/`payload_length` exist from this boot protocol on.
const MIN_PROTOCOL: u16 = 0x0208;

/// The legacy LZ4 frame: this magic, then blocks each preceded by its compressed length, each
/// unpacking to at most [`LZ4_LEGACY_BLOCK`] bytes.
const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

/// A kernel bigger than this is not a kernel; stops a corrupt payload from filling memory.
const MAX_VMLINUX: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum VmlinuxError {
    #[error("failed to read the guest kernel `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to write the uncompressed kernel `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "guest kernel `{}` is neither an ELF vmlinux nor a bzImage hearth can unpack ({why}); \
         pass `--kernel` an uncompressed vmlinux",
        path.display()
    )]
    Unsupported { path: PathBuf, why: String },
    #[error("failed to unpack the {format} payload of the guest kernel `{}`", path.display())]
    Unpack {
        path: PathBuf,
        format: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Writes the ELF kernel inside `kernel` (a bzImage, or already a vmlinux) to `dest`.
pub(crate) fn install(kernel: &Path, dest: &Path) -> Result<(), VmlinuxError> {
    let image = std::fs::read(kernel).map_err(|source| VmlinuxError::Read {
        path: kernel.to_owned(),
        source,
    })?;
    let elf = unpack(&image).map_err(|e| match e {
        Unpacked::Unsupported(why) => VmlinuxError::Unsupported {
            path: kernel.to_owned(),
            why,
        },
        Unpacked::Failed { format, source } => VmlinuxError::Unpack {
            path: kernel.to_owned(),
            format,
            source,
        },
    })?;
    let write_err = |source| VmlinuxError::Write {
        path: dest.to_owned(),
        source,
    };
    let mut out = AtomicFile::create(dest).map_err(write_err)?;
    io::Write::write_all(out.file(), &elf).map_err(write_err)?;
    out.commit(0o644).map_err(write_err)
}

#[derive(Debug)]
enum Unpacked {
    Unsupported(String),
    Failed {
        format: &'static str,
        source: io::Error,
    },
}

/// The ELF kernel in `image`.
fn unpack(image: &[u8]) -> Result<Vec<u8>, Unpacked> {
    if image.starts_with(ELF_MAGIC) {
        return Ok(image.to_vec());
    }
    let payload = payload(image).map_err(|why| Unpacked::Unsupported(why.to_owned()))?;
    let (format, unpacked) = if payload.starts_with(&LZ4_LEGACY_MAGIC) {
        ("lz4", unpack_lz4_legacy(&payload[LZ4_LEGACY_MAGIC.len()..]))
    } else if payload.starts_with(&[0x1f, 0x8b]) {
        ("gzip", read_bounded(flate2::read::GzDecoder::new(payload)))
    } else if payload.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        (
            "zstd",
            zstd::stream::read::Decoder::new(payload)
                .and_then(|decoder| read_bounded(decoder.single_frame())),
        )
    } else {
        let format = match payload {
            [0xfd, b'7', b'z', b'X', b'Z', ..] => "xz",
            [0x5d, 0x00, ..] => "lzma",
            [b'B', b'Z', b'h', ..] => "bzip2",
            [0x89, b'L', b'Z', b'O', ..] => "lzo",
            _ => "an unknown format",
        };
        return Err(Unpacked::Unsupported(format!("its payload is {format}")));
    };
    let elf = unpacked.map_err(|source| Unpacked::Failed { format, source })?;
    if !elf.starts_with(ELF_MAGIC) {
        return Err(Unpacked::Unsupported(format!(
            "its {format} payload is not an ELF image"
        )));
    }
    Ok(elf)
}

/// The compressed kernel inside a bzImage, as its setup header locates it.
fn payload(image: &[u8]) -> Result<&[u8], &'static str> {
    let u16_at = |at: usize| {
        image
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        image
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if image.get(HEADER_MAGIC..HEADER_MAGIC + 4) != Some(b"HdrS") {
        return Err("no Linux boot header");
    }
    if u16_at(PROTOCOL_VERSION).ok_or("truncated boot header")? < MIN_PROTOCOL {
        return Err("boot protocol older than 2.08 does not locate its payload");
    }
    // A zero count means 4, for the oldest loaders' sake.
    let setup_sects = match image[SETUP_SECTS] {
        0 => 4,
        n => usize::from(n),
    };
    let offset = u32_at(PAYLOAD_OFFSET).ok_or("truncated boot header")? as usize;
    let length = u32_at(PAYLOAD_LENGTH).ok_or("truncated boot header")? as usize;
    let start = (setup_sects + 1) * 512 + offset;
    image
        .get(start..start.saturating_add(length))
        .ok_or("its payload lies past the end of the file")
}

fn read_bounded(reader: impl Read) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    reader.take(MAX_VMLINUX + 1).read_to_end(&mut out)?;
    if out.len() as u64 > MAX_VMLINUX {
        return Err(too_big());
    }
    Ok(out)
}

fn too_big() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("it unpacks to more than {MAX_VMLINUX} bytes"),
    )
}

/// LZ4's legacy frame after its magic. The kernel appends the unpacked size, which reads as a
/// block length longer than what is left and so ends the frame, as in the kernel's `unlz4`;
/// a repeated magic starts another frame.
fn unpack_lz4_legacy(mut input: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some((len, rest)) = input.split_first_chunk::<4>() {
        if *len == LZ4_LEGACY_MAGIC {
            input = rest;
            continue;
        }
        let len = u32::from_le_bytes(*len) as usize;
        let Some(block) = rest.get(..len) else {
            break;
        };
        let unpacked = lz4_flex::block::decompress(block, LZ4_LEGACY_BLOCK)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        out.extend_from_slice(&unpacked);
        if out.len() as u64 > MAX_VMLINUX {
            return Err(too_big());
        }
        input = &rest[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bzImage's first sectors with `payload` placed where its header says.
    fn bzimage(payload: &[u8]) -> Vec<u8> {
        let setup_sects = 2u8;
        let mut image = vec![0u8; (usize::from(setup_sects) + 1) * 512];
        image[SETUP_SECTS] = setup_sects;
        image[HEADER_MAGIC..HEADER_MAGIC + 4].copy_from_slice(b"HdrS");
        image[PROTOCOL_VERSION..PROTOCOL_VERSION + 2].copy_from_slice(&0x020fu16.to_le_bytes());
        let offset = 100u32;
        image[PAYLOAD_OFFSET..PAYLOAD_OFFSET + 4].copy_from_slice(&offset.to_le_bytes());
        let length = u32::try_from(payload.len()).unwrap();
        image[PAYLOAD_LENGTH..PAYLOAD_LENGTH + 4].copy_from_slice(&length.to_le_bytes());
        image.extend(std::iter::repeat_n(0xaa, offset as usize));
        image.extend_from_slice(payload);
        // What follows the payload in a real bzImage (its CRC and padding) is never read.
        image.extend_from_slice(b"trailer");
        image
    }

    fn elf() -> Vec<u8> {
        let mut elf = ELF_MAGIC.to_vec();
        elf.extend((0..200_000u32).flat_map(|i| (i % 251).to_le_bytes()));
        elf
    }

    /// The kernel's `lz4 -l` output with its appended size: two blocks, the second after a
    /// repeated magic.
    fn lz4_legacy(data: &[u8]) -> Vec<u8> {
        let (first, second) = data.split_at(data.len() / 2);
        let mut out = LZ4_LEGACY_MAGIC.to_vec();
        for (index, part) in [first, second].into_iter().enumerate() {
            if index == 1 {
                out.extend_from_slice(&LZ4_LEGACY_MAGIC);
            }
            let block = lz4_flex::block::compress(part);
            out.extend_from_slice(&u32::try_from(block.len()).unwrap().to_le_bytes());
            out.extend_from_slice(&block);
        }
        out.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
        out
    }

    #[test]
    fn test_every_supported_payload_unpacks_to_the_elf() {
        let elf = elf();
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gzip, &elf).unwrap();
        let mut gzip = gzip.finish().unwrap();
        gzip.extend_from_slice(&[1, 2, 3, 4]);
        let mut zstd = zstd::encode_all(&elf[..], 1).unwrap();
        zstd.extend_from_slice(&[1, 2, 3, 4]);
        for (name, payload) in [("lz4", lz4_legacy(&elf)), ("gzip", gzip), ("zstd", zstd)] {
            assert_eq!(unpack(&bzimage(&payload)).unwrap(), elf, "{name}");
        }
    }

    #[test]
    fn test_an_elf_kernel_is_kept_as_it_is() {
        assert_eq!(unpack(&elf()).unwrap(), elf());
    }

    #[test]
    fn test_unsupported_and_broken_kernels_say_why() {
        let why = |image: &[u8]| match unpack(image).unwrap_err() {
            Unpacked::Unsupported(why) => why,
            Unpacked::Failed { format, source } => format!("{format}: {source}"),
        };
        assert_eq!(why(b"MZ not a kernel"), "no Linux boot header");
        assert_eq!(
            why(&bzimage(b"\xfd7zXZ\x00rest")),
            "its payload is xz",
            "xz is named"
        );
        let mut short = bzimage(&lz4_legacy(&elf()));
        short.truncate(3 * 512 + 150);
        assert_eq!(why(&short), "its payload lies past the end of the file");
        let not_elf = lz4_legacy(b"plain bytes, no ELF header here");
        assert_eq!(
            why(&bzimage(&not_elf)),
            "its lz4 payload is not an ELF image"
        );
        let mut corrupt = LZ4_LEGACY_MAGIC.to_vec();
        corrupt.extend_from_slice(&8u32.to_le_bytes());
        corrupt.extend_from_slice(&[0xff; 8]);
        assert!(why(&bzimage(&corrupt)).starts_with("lz4: "));
    }

    #[test]
    fn test_the_hosts_own_kernel_unpacks_to_an_x86_64_elf() {
        let kernel = std::fs::read_dir("/boot")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().contains("vmlinuz-"))
            .max()
            .expect("no /boot/vmlinuz-*: install linux-image-cloud-amd64 (./install.sh does)");
        let image = std::fs::read(&kernel).unwrap();
        let elf = unpack(&image).unwrap_or_else(|e| panic!("{}: {e:?}", kernel.display()));
        const EM_X86_64: u16 = 62;
        assert_eq!(u16::from_le_bytes([elf[18], elf[19]]), EM_X86_64);
        assert!(elf.len() > image.len(), "an unpacked kernel is bigger");
    }

    #[test]
    fn test_install_writes_the_elf_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("vmlinuz");
        std::fs::write(&kernel, bzimage(&lz4_legacy(&elf()))).unwrap();
        let dest = dir.path().join("vmlinux");
        install(&kernel, &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), elf());
        std::fs::write(&kernel, b"garbage").unwrap();
        let err = install(&kernel, &dest).unwrap_err();
        assert!(err.to_string().contains("--kernel"), "{err}");
        assert_eq!(std::fs::read(&dest).unwrap(), elf(), "the old file stays");
    }
}
