//! A bound on how much one image unpacks to, so a small layer that expands without end (a
//! decompression bomb) stops early with a clear error instead of filling the state dir.

use std::io::{self, Read};

/// The default bound on an image's total unpacked size: 16 GiB. The largest images in common use
/// (CUDA and ML framework images) unpack to about 10 GiB; a bomb is stopped long before it
/// fills a typical `/var/lib`.
pub const DEFAULT_MAX_UNPACKED_BYTES: u64 = 16 << 30;

/// Uncompressed tar bytes read so far across an image's layers, against the limit.
#[derive(Debug)]
pub(crate) struct UnpackBudget {
    limit: u64,
    used: u64,
}

impl UnpackBudget {
    pub(crate) fn new(limit: u64) -> Self {
        UnpackBudget { limit, used: 0 }
    }

    /// True once a read went past the limit.
    pub(crate) fn exceeded(&self) -> bool {
        self.used > self.limit
    }

    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// `inner`, failing any read that takes the image past the limit.
    pub(crate) fn reader<R: Read>(&mut self, inner: R) -> Bounded<'_, R> {
        Bounded {
            inner,
            budget: self,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Bounded<'a, R> {
    inner: R,
    budget: &'a mut UnpackBudget,
}

impl<R: Read> Read for Bounded<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.budget.used = self.budget.used.saturating_add(n as u64);
        if self.budget.exceeded() {
            return Err(io::Error::other(format!(
                "the image unpacks to more than {} bytes",
                self.budget.limit
            )));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_budget_is_shared_by_the_layers_of_an_image() {
        let mut budget = UnpackBudget::new(10);
        io::copy(&mut budget.reader(&b"123456"[..]), &mut io::sink()).unwrap();
        assert!(!budget.exceeded());
        let err = io::copy(&mut budget.reader(&b"123456"[..]), &mut io::sink()).unwrap_err();
        assert!(err.to_string().contains("more than 10 bytes"), "{err}");
        assert!(budget.exceeded());
    }
}
