//! The one memory-mapping site of edgellm.

use std::fmt;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// What a path names when it is not a regular file: a model must be read from a regular file
/// (mapping a directory fails with an unhelpful OS error, opening a FIFO blocks until someone
/// writes to it, a device has no length).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecialFile {
    /// A directory.
    Directory,
    /// A named pipe.
    Fifo,
    /// A character device (`/dev/zero`, a terminal).
    CharDevice,
    /// A block device (a disk).
    BlockDevice,
    /// A Unix domain socket.
    Socket,
    /// Anything else that is not a regular file.
    Other,
}

impl fmt::Display for SpecialFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SpecialFile::Directory => "a directory",
            SpecialFile::Fifo => "a named pipe (FIFO)",
            SpecialFile::CharDevice => "a character device",
            SpecialFile::BlockDevice => "a block device",
            SpecialFile::Socket => "a socket",
            SpecialFile::Other => "not a regular file",
        })
    }
}

/// What `path` is when it exists and is not a regular file (symbolic links followed), without
/// opening it; `None` for a regular file, or when the path cannot be examined (opening it then
/// reports why).
pub fn special_file(path: &Path) -> Option<SpecialFile> {
    let t = std::fs::metadata(path).ok()?.file_type();
    if t.is_file() {
        return None;
    }
    if t.is_dir() {
        return Some(SpecialFile::Directory);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return Some(SpecialFile::Fifo);
        }
        if t.is_char_device() {
            return Some(SpecialFile::CharDevice);
        }
        if t.is_block_device() {
            return Some(SpecialFile::BlockDevice);
        }
        if t.is_socket() {
            return Some(SpecialFile::Socket);
        }
    }
    Some(SpecialFile::Other)
}

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
    /// Map the file at `path` read-only. A path that is not a regular file (see
    /// [`special_file`]) is refused with [`io::ErrorKind::InvalidInput`] before it is opened.
    pub fn map(path: &Path) -> io::Result<Bytes> {
        if let Some(kind) = special_file(path) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{kind}, not a regular file")));
        }
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
