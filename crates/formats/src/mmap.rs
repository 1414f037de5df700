//! The one memory-mapping site of edgellm.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// Read-only bytes of a file: memory-mapped when possible, or owned (for in-memory buffers).
#[derive(Clone)]
pub struct Bytes {
    inner: Arc<Inner>,
}

enum Inner {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Bytes {
    /// Map the file at `path` read-only.
    pub fn map(path: &Path) -> io::Result<Bytes> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        if len == 0 {
            // Mapping an empty file fails on some platforms; an empty buffer is equivalent.
            return Ok(Bytes::from_vec(Vec::new()));
        }
        // SAFETY: the map is read-only. Like every mmap-based model loader we rely on the file
        // not being truncated or rewritten while it is mapped; edgellm never writes to a file
        // it has mapped (the GGUF writer writes to a new file and renames it into place).
        let map = unsafe { memmap2::MmapOptions::new().map(&file)? };
        Ok(Bytes { inner: Arc::new(Inner::Mapped(map)) })
    }

    /// Wrap an owned buffer.
    pub fn from_vec(v: Vec<u8>) -> Bytes {
        Bytes { inner: Arc::new(Inner::Owned(v)) }
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match &*self.inner {
            Inner::Mapped(m) => m,
            Inner::Owned(v) => v,
        }
    }

    /// Tells the OS that `range` of a mapped file is not needed for now: its pages leave this
    /// process's resident memory, and a later read brings them back from the file (or the page
    /// cache). For weights that were copied into another layout at load time. No effect on
    /// owned buffers, on empty or out-of-bounds ranges, or where the OS lacks the advice.
    pub fn release(&self, range: std::ops::Range<usize>) {
        #[cfg(unix)]
        if let Inner::Mapped(m) = &*self.inner {
            if range.start < range.end && range.end <= m.len() {
                // SAFETY: the map is a read-only map of a file: dropping its pages loses
                // nothing (they are read again from the file on the next access), and no
                // reference into them is invalidated (the addresses stay mapped).
                let _ = unsafe {
                    m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, range.start, range.len())
                };
            }
        }
        #[cfg(not(unix))]
        let _ = range;
    }

    /// Whether the bytes are a memory map of a file (as opposed to an owned buffer).
    pub fn is_mapped(&self) -> bool {
        matches!(&*self.inner, Inner::Mapped(_))
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}
