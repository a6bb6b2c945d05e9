//! Where the data pass's bytes come from: a small trait, with a local file and bytes in memory as sources.
//!
//! The data pass ([`crate::datapass`]) asks a [`ChunkSource`] for the object's bytes in consecutive
//! chunks, from offset 0 to the end, into buffers it reuses, and, rarely, for one span at any offset
//! (a non-contiguous pickle tensor gathered across its span). Nothing else: a source may stream (one
//! sequential read, or a streamed GET of a remote object) and may keep its own caches in check.
//!
//! [`FileSource`] reads a local file with `pread` into the pass's buffers and drops behind itself the
//! page-cache pages its reads brought in (pages cached before the pass stay cached), so a terabyte scan
//! neither grows the page cache nor evicts what was there. [`MemorySource`] serves bytes in memory.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

/// The bytes of one object, read by the data pass in order.
///
/// Contract: the pass calls [`ChunkSource::next_chunk`] with `off` = 0 first, then each call starts
/// where the previous one ended (a new pass over the same source starts again at 0). A read shorter
/// than asked means the object ended early (it shrank under the scan); the pass then asks
/// [`ChunkSource::shrunk`] for the new length and reports the file as truncated.
pub trait ChunkSource: Send {
    /// The object's length when the scan started (the tensor table was read against it).
    fn len(&self) -> u64;

    /// True for an empty object.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` with the bytes at `off..off + buf.len()` (the next in-order chunk, see the trait doc);
    /// returns how many were read: `buf.len()` unless the object ends first.
    fn next_chunk(&mut self, off: u64, buf: &mut [u8]) -> io::Result<usize>;

    /// Reads the bytes at `off..off + buf.len()` out of order (for the rare span gathered across);
    /// returns how many were read, as [`ChunkSource::next_chunk`].
    fn read_at(&mut self, off: u64, buf: &mut [u8]) -> io::Result<usize>;

    /// The object's current length when it is now shorter than [`ChunkSource::len`], else `None`.
    fn shrunk(&mut self) -> Option<u64>;
}

/// Bytes in memory (tests, small inputs).
pub struct MemorySource<'a>(pub &'a [u8]);

impl ChunkSource for MemorySource<'_> {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn next_chunk(&mut self, off: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.read_at(off, buf)
    }

    fn read_at(&mut self, off: u64, buf: &mut [u8]) -> io::Result<usize> {
        let from = (off as usize).min(self.0.len());
        let n = buf.len().min(self.0.len() - from);
        buf[..n].copy_from_slice(&self.0[from..from + n]);
        Ok(n)
    }

    fn shrunk(&mut self) -> Option<u64> {
        None
    }
}

/// How far ahead of the reads page residency is noted: beyond the kernel's read-ahead window.
const NOTE_AHEAD: u64 = 32 << 20;

/// A local file read with `pread`, dropping behind the reads the pages they brought into the cache.
pub struct FileSource<'a> {
    file: &'a File,
    len: u64,
    page: u64,
    /// A map of the file used only to ask the kernel which pages are cached (`mincore`); never read
    /// through, so a file shrinking under it cannot fault.
    probe: Option<memmap2::Mmap>,
    noted: u64,
    /// Residency (one byte per page) of ranges before the pass read them, not yet read.
    resident: VecDeque<(u64, Vec<u8>)>,
}

impl<'a> FileSource<'a> {
    /// A source over the first `len` bytes of `file` (its length when the table was read).
    pub fn new(file: &'a File, len: u64) -> FileSource<'a> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
        // SAFETY: the map is only handed to mincore, which reads page-cache state, never the pages:
        // no byte of it is ever dereferenced, so truncation of the file cannot fault through it.
        let probe = (len > 0)
            .then(|| unsafe { memmap2::MmapOptions::new().len(len as usize).map(file) }.ok())
            .flatten();
        // SAFETY: plain syscall on an open descriptor; advice only (a larger read-ahead window).
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
        }
        FileSource {
            file,
            len,
            page,
            probe,
            noted: 0,
            resident: VecDeque::new(),
        }
    }

    /// Reads into `buf` at `off` until it is full or the file ends.
    fn pread(&self, off: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.file.read_at(&mut buf[n..], off + n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Records page residency from where the last record ended up to `to` (before reads bring pages in).
    fn note(&mut self, to: u64) {
        let Some(map) = &self.probe else { return };
        let to = to.min(self.len);
        let from = self.noted;
        if to <= from {
            return;
        }
        let mut vec = vec![0u8; (to - from).div_ceil(self.page) as usize];
        // SAFETY: [from, to) lies inside the live map, `from` is page aligned (every record but the
        // last ends on a page boundary) and `vec` has one byte per page of the range.
        let rc = unsafe {
            libc::mincore(
                map.as_ptr().add(from as usize) as *mut libc::c_void,
                (to - from) as usize,
                vec.as_mut_ptr(),
            )
        };
        if rc != 0 {
            vec.fill(1); // unknown: keep the pages rather than evict someone's cache
        }
        self.resident.push_back((from, vec));
        self.noted = to;
    }

    fn was_resident(&self, off: u64) -> bool {
        self.resident
            .iter()
            .find(|(c, v)| off >= *c && off < c + v.len() as u64 * self.page)
            .is_some_and(|(c, v)| v[((off - c) / self.page) as usize] & 1 == 1)
    }

    /// Drops from the page cache the pages of `[from, to)` that were not cached before the pass.
    fn drop_behind(&mut self, from: u64, to: u64) {
        let fd = self.file.as_raw_fd();
        let from = from / self.page * self.page;
        let mut run: Option<u64> = None;
        let mut p = from;
        while p < to {
            match (self.was_resident(p), run) {
                (false, None) => run = Some(p),
                (true, Some(s)) => {
                    fadvise_dontneed(fd, s, p - s);
                    run = None;
                }
                _ => {}
            }
            p += self.page;
        }
        if let Some(s) = run {
            fadvise_dontneed(fd, s, to - s);
        }
        while let Some((c, v)) = self.resident.front() {
            if c + v.len() as u64 * self.page <= to / self.page * self.page {
                self.resident.pop_front();
            } else {
                break;
            }
        }
    }
}

impl ChunkSource for FileSource<'_> {
    fn len(&self) -> u64 {
        self.len
    }

    fn next_chunk(&mut self, off: u64, buf: &mut [u8]) -> io::Result<usize> {
        if off == 0 {
            self.noted = 0;
            self.resident.clear();
        }
        let end = off + buf.len() as u64;
        self.note(end + NOTE_AHEAD);
        let n = self.pread(off, buf)?;
        // A partial page at the end of a chunk is dropped only with the chunk holding its end.
        let done = if end >= self.len {
            self.len
        } else {
            end / self.page * self.page
        };
        self.drop_behind(off / self.page * self.page, done);
        Ok(n)
    }

    fn read_at(&mut self, off: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.pread(off, buf)
    }

    fn shrunk(&mut self) -> Option<u64> {
        let now = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        (now < self.len).then_some(now)
    }
}

/// Drops `[off, off + len)` of the file from the page cache.
pub fn fadvise_dontneed(fd: i32, off: u64, len: u64) {
    // SAFETY: plain syscall on an open descriptor; advice only, failure is harmless.
    unsafe {
        libc::posix_fadvise(
            fd,
            off as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_DONTNEED,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn read_all(s: &mut dyn ChunkSource, chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; chunk];
        let mut off = 0;
        while off < s.len() {
            let want = chunk.min((s.len() - off) as usize);
            let n = s.next_chunk(off, &mut buf[..want]).unwrap();
            assert_eq!(n, want);
            out.extend_from_slice(&buf[..n]);
            off += n as u64;
        }
        out
    }

    #[test]
    fn file_and_memory_sources_give_the_same_bytes() {
        let data: Vec<u8> = (0..1_000_003u32).map(|i| (i * 7 % 253) as u8).collect();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&data).unwrap();
        let file = f.reopen().unwrap();
        let mut fs = FileSource::new(&file, data.len() as u64);
        assert_eq!(read_all(&mut fs, 65536 + 3), data);
        assert_eq!(read_all(&mut MemorySource(&data), 4096), data);
        let mut b = [0u8; 10];
        assert_eq!(fs.read_at(999_999, &mut b).unwrap(), 4);
        assert_eq!(&b[..4], &data[999_999..]);
        assert_eq!(MemorySource(&data).read_at(999_999, &mut b).unwrap(), 4);
        assert_eq!(fs.shrunk(), None);
        f.as_file().set_len(500).unwrap();
        assert_eq!(fs.shrunk(), Some(500));
        let mut big = vec![0u8; 4096];
        assert_eq!(fs.next_chunk(0, &mut big).unwrap(), 500);
    }
}
