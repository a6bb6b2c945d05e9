//! Where the data pass's bytes come from: a small trait, with a local file and bytes in memory as sources.
//!
//! The data pass ([`crate::datapass`]) asks a [`ChunkSource`] for the object's bytes in consecutive
//! chunks, from offset 0 to the end, into buffers it reuses, and, rarely, for one span at any offset
//! (a non-contiguous pickle tensor gathered across its span). Nothing else: a source may stream (one
//! sequential read, or a streamed GET of a remote object) and may keep its own caches in check.
//!
//! A source may instead be read in place: [`ChunkSource::map`] gives the whole object mapped, and the
//! pass asks for it window by window ([`ChunkSource::bring`], [`ChunkSource::release`]) instead of
//! copies ([`ChunkSource::next_chunk`]).
//!
//! [`FileSource`] maps a local file (a [`GuardedMap`]: the file shrinking under it is caught), brings
//! each window with pages not yet cached into the page cache and the page tables ahead of the readers
//! (one `MADV_POPULATE_READ` per window on the reader's thread, the map's read-ahead keeping the next
//! windows' reads in flight; `WILLNEED` and one read per fault-around block where the kernel lacks
//! it) and leaves a wholly cached window ([`ChunkSource::cached`]) to its readers' faults, unmaps the
//! windows read, and drops behind itself the
//! page-cache pages it brought in (pages cached before the pass stay cached), so a terabyte scan
//! neither grows the page cache nor evicts what was there. A short file wholly cached, and a file
//! that cannot be mapped, it reads with `pread` into the pass's buffers. [`MemorySource`] serves
//! bytes in memory.

use crate::mapguard::GuardedMap;
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

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

    /// The whole object mapped read-only, when this source is read in place: the pass then calls
    /// [`ChunkSource::bring`] and [`ChunkSource::release`] in place of [`ChunkSource::next_chunk`],
    /// and reads the map (checking [`GuardedMap::faulted`] after each window).
    fn map(&self) -> Option<Arc<GuardedMap>> {
        None
    }

    /// Brings the map's bytes `[off, off + len)` into memory ahead of their readers; called in order
    /// from offset 0 like [`ChunkSource::next_chunk`]. Returns how many of them the object still
    /// holds (`len` unless it shrank).
    fn bring(&mut self, off: u64, len: u64) -> io::Result<u64> {
        let _ = off;
        Ok(len)
    }

    /// The readers are done with the map's bytes `[off, off + len)` (each window once, in order).
    fn release(&mut self, off: u64, len: u64) {
        let _ = (off, len);
    }

    /// Whether the map's bytes `[off, off + len)`, the next to be brought, are all cached already.
    fn cached(&mut self, off: u64, len: u64) -> bool {
        let _ = (off, len);
        false
    }
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

/// How far ahead of the reads page residency is noted: beyond what the kernel's read-ahead has in
/// flight (its window, 16 MiB at most with sequential advice on a disk reading ahead 8 MiB, and the
/// next one it starts on reaching the first's marker).
const NOTE_AHEAD: u64 = 64 << 20;
/// Bytes one page fault maps when their pages are cached (the kernel's default `fault_around_bytes`).
const FAULT_AROUND: u64 = 64 << 10;
/// Files up to this long are read by `pread` when wholly cached, not mapped.
const PREAD_MAX: u64 = 1 << 20;
/// Residency is asked for in pieces this long (a huge page): whole when cached, else page by page.
const NOTE_PIECE: u64 = 2 << 20;

/// A local file read in place through a map (or with `pread` where it cannot be mapped), dropping
/// behind the reads the pages they brought into the cache.
pub struct FileSource<'a> {
    file: &'a File,
    len: u64,
    page: u64,
    /// The file mapped: read in place by the pass, and asked which pages are cached (`mincore`).
    map: Option<Arc<GuardedMap>>,
    noted: u64,
    /// Where read-ahead has been asked for up to (windows faulted in by touch).
    advised: u64,
    /// Windows are brought in with `MADV_POPULATE_READ` (until the kernel says it lacks it), else by
    /// touching them.
    populate: bool,
    /// Residency of ranges `[from, to)` before the pass read them, not yet read: one byte per page,
    /// or `None` when every page was cached.
    resident: VecDeque<(u64, u64, Option<Vec<u8>>)>,
}

impl<'a> FileSource<'a> {
    /// A source over the first `len` bytes of `file` (its length when the table was read).
    pub fn new(file: &'a File, len: u64) -> FileSource<'a> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
        // A short file wholly in the page cache is read by `pread`: a map's setup and teardown (page
        // faults, and unmapping's TLB flush on every core) cost more than copying it.
        let cached = len <= PREAD_MAX && cached_pages(file, 0, len) == Some(len.div_ceil(page));
        let map = match cached {
            true => None,
            false => GuardedMap::new(file, len).ok().map(Arc::new),
        };
        // No `MADV_SEQUENTIAL` on the map: its faults then read ahead only as far as the pages cached
        // before them suggest, and read-ahead from a page after the cached header of a file scanned
        // before is then one unmarked read in 4 KiB folios (twice as slow as from an evicted file).
        // The default read-around reads in large folios and marks where to read further ahead.
        if map.is_some() {
            // SAFETY: plain syscall on an open descriptor; advice only (a larger read-ahead window).
            unsafe {
                libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
            }
        }
        FileSource {
            file,
            len,
            page,
            map,
            noted: 0,
            advised: 0,
            populate: true,
            resident: VecDeque::new(),
        }
    }

    /// This source bringing windows in by touching them, as where the kernel lacks
    /// `MADV_POPULATE_READ` (tests compare both ways).
    #[cfg(test)]
    pub(crate) fn touching(mut self) -> Self {
        self.populate = false;
        self
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

    /// Forgets what an earlier pass noted when a new one starts (at offset 0).
    fn restart_at(&mut self, off: u64) {
        if off == 0 {
            self.noted = 0;
            self.advised = 0;
            self.resident.clear();
        }
    }

    /// Records page residency from where the last record ended up to `to` (before reads bring pages in).
    fn note(&mut self, to: u64) {
        let to = to.min(self.len);
        let from = self.noted;
        if to <= from {
            return;
        }
        self.noted = to;
        // Piece by piece: the kernel counts a piece's cached pages far faster than mincore lists
        // them, and a wholly cached piece needs no page-by-page record.
        let mut a = from;
        while a < to {
            let b = (a + NOTE_PIECE).min(to);
            let pages = (b - a).div_ceil(self.page);
            let cached = cached_pages(self.file, a, b);
            if cached == Some(pages) {
                match self.resident.back_mut() {
                    Some((_, end, None)) if *end == a => *end = b,
                    _ => self.resident.push_back((a, b, None)),
                }
                a = b;
                continue;
            }
            let mut vec = vec![1u8; pages as usize];
            let Some(map) = &self.map else {
                // unmapped, pages cannot be listed: dropped if none was cached, else all kept
                // rather than evict someone's cache
                vec.fill(u8::from(cached != Some(0)));
                self.resident.push_back((a, b, Some(vec)));
                a = b;
                continue;
            };
            // SAFETY: [a, b) lies inside the live map, `a` is page aligned (every record but the
            // last ends on a page boundary) and `vec` has one byte per page of the range.
            let rc = unsafe {
                libc::mincore(
                    map.map().as_ptr().add(a as usize) as *mut libc::c_void,
                    (b - a) as usize,
                    vec.as_mut_ptr(),
                )
            };
            if rc != 0 {
                vec.fill(1); // unknown: keep the pages rather than evict someone's cache
            }
            self.resident.push_back((a, b, Some(vec)));
            a = b;
        }
    }

    /// The page-aligned end of what a read ending at `end` is done with: a partial page at the end of a
    /// window is dropped only with the window holding its end.
    fn done_to(&self, end: u64) -> u64 {
        if end >= self.len {
            self.len
        } else {
            end / self.page * self.page
        }
    }

    /// The runs of pages in `[from, to)` (`from` page aligned) that were not cached before the pass
    /// (pages never noted count as not cached).
    fn uncached_runs(&self, from: u64, to: u64) -> Vec<(u64, u64)> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let mut add = |a: u64, b: u64| match runs.last_mut() {
            Some(r) if r.1 == a => r.1 = b,
            _ => runs.push((a, b)),
        };
        let mut p = from;
        for (rf, rt, pages) in &self.resident {
            if *rt <= p || p >= to {
                continue;
            }
            if *rf > p {
                add(p, (*rf).min(to)); // a gap no record covers
                p = (*rf).min(to);
            }
            let end = (*rt).min(to);
            if let Some(v) = pages {
                while p < end {
                    let q = (p + self.page).min(end);
                    if v[((p - rf) / self.page) as usize] & 1 == 0 {
                        add(p, q);
                    }
                    p = q;
                }
            }
            p = end;
        }
        if p < to {
            add(p, to);
        }
        runs
    }

    /// Drops from the page cache the pages of `[from, to)` that were not cached before the pass.
    fn drop_behind(&mut self, from: u64, to: u64) {
        let fd = self.file.as_raw_fd();
        for (a, b) in self.uncached_runs(from / self.page * self.page, to) {
            fadvise_dontneed(fd, a, b - a);
        }
        while let Some((_, rt, _)) = self.resident.front() {
            if *rt <= to / self.page * self.page {
                self.resident.pop_front();
            } else {
                break;
            }
        }
    }

    /// Brings `[off, end)` of the map in by touching it (where `MADV_POPULATE_READ` is missing or
    /// failed): read-ahead advice on the pages not cached from here to as far as residency is
    /// noted, then one read per fault-around block, which maps the block's cached pages at once (a
    /// page it leaves out is faulted in by its reader). A page past the end of a file that shrank
    /// reads as zero and flags the map; returns how many bytes of the window the file still holds.
    fn fault_in(&mut self, map: &GuardedMap, off: u64, end: u64) -> io::Result<u64> {
        let ahead = self.noted.max(end);
        for (a, b) in self.uncached_runs(self.advised.max(off), ahead) {
            // SAFETY: plain syscall on an open descriptor; advice only (read ahead, in large requests).
            unsafe {
                libc::posix_fadvise(
                    self.file.as_raw_fd(),
                    a as libc::off_t,
                    (b - a) as libc::off_t,
                    libc::POSIX_FADV_WILLNEED,
                );
            }
        }
        self.advised = ahead;
        let mut p = off;
        while p < end {
            // SAFETY: `p` lies inside the live map (`end` is at most its length); a volatile read
            // so the load is not optimised away.
            unsafe { std::ptr::read_volatile(map.as_ptr().add(p as usize)) };
            p += FAULT_AROUND;
        }
        if map.faulted() {
            return Ok(self.shrunk().map_or(end, |now| now.clamp(off, end)) - off);
        }
        Ok(end - off)
    }
}

/// Pages of `[from, to)` of `file` in the page cache, counted by the kernel (`cachestat`, Linux 6.5+;
/// `None` where it is missing): a window wholly cached needs no page-by-page record.
fn cached_pages(file: &File, from: u64, to: u64) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        #[repr(C)]
        struct Range {
            off: u64,
            len: u64,
        }
        #[repr(C)]
        #[derive(Default)]
        struct Stat {
            nr_cache: u64,
            nr_dirty: u64,
            nr_writeback: u64,
            nr_evicted: u64,
            nr_recently_evicted: u64,
        }
        /// The same number on every architecture (a syscall added after the tables were unified).
        const SYS_CACHESTAT: libc::c_long = 451;
        let range = Range {
            off: from,
            len: to - from,
        };
        let mut stat = Stat::default();
        // SAFETY: cachestat(fd, *const range, *mut stat, flags = 0) reads `range` and writes `stat`,
        // both live and laid out as the kernel's `struct cachestat_range` / `struct cachestat`.
        let rc = unsafe {
            libc::syscall(
                SYS_CACHESTAT,
                file.as_raw_fd(),
                &range as *const Range,
                &mut stat as *mut Stat,
                0 as libc::c_uint,
            )
        };
        if rc == 0 {
            return Some(stat.nr_cache);
        }
    }
    let _ = (file, from, to);
    None
}

impl ChunkSource for FileSource<'_> {
    fn len(&self) -> u64 {
        self.len
    }

    fn next_chunk(&mut self, off: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.restart_at(off);
        let end = off + buf.len() as u64;
        self.note(end + NOTE_AHEAD);
        let n = self.pread(off, buf)?;
        let done = self.done_to(end);
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

    fn map(&self) -> Option<Arc<GuardedMap>> {
        self.map.clone()
    }

    fn cached(&mut self, off: u64, len: u64) -> bool {
        self.restart_at(off);
        let end = (off + len).min(self.len);
        self.note(end + NOTE_AHEAD);
        self.map.is_some()
            && self
                .uncached_runs(off / self.page * self.page, end)
                .is_empty()
    }

    fn bring(&mut self, off: u64, len: u64) -> io::Result<u64> {
        let end = (off + len).min(self.len);
        let cached = self.cached(off, len);
        let Some(map) = self.map.clone() else {
            return Ok(len);
        };
        if cached {
            // Left to its readers' faults, each of which maps a fault-around block of cached
            // pages; bringing it in page by page would cost twice their system time.
            return Ok(end - off);
        }
        if self.populate {
            // One call fills the window's page tables: cached pages are mapped whole (a huge page
            // at a time), the others read through the map's read-ahead, which reads in large folios
            // and keeps the next windows' reads in flight while this one is consumed (`WILLNEED`
            // would read in 4 KiB folios: a fault, and page-cache work, per 64 KiB).
            let advice = memmap2::Advice::PopulateRead;
            match map
                .map()
                .advise_range(advice, off as usize, (end - off) as usize)
            {
                Ok(()) => return Ok(end - off),
                // a kernel before 5.14: fault the windows in below from now on
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.populate = false,
                // a page past the end of a file that shrank (EFAULT), or interrupted: the reads
                // below fault, and the guard turns a page past the end into zeros and a flag
                Err(_) => {}
            }
        }
        self.fault_in(&map, off, end)
    }

    fn release(&mut self, off: u64, len: u64) {
        let done = self.done_to(off + len);
        let from = off / self.page * self.page;
        if done <= from {
            return;
        }
        if let Some(map) = &self.map {
            // SAFETY: the pass is done with these bytes and holds no reference into them; dropping
            // the page-table entries of a read-only shared file map leaves the file and the page
            // cache as they were (a later read would fault the same bytes back in).
            let _ = unsafe {
                map.map().unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    from as usize,
                    (done - from) as usize,
                )
            };
        }
        self.drop_behind(from, done);
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

    /// Which of the file's pages are in the page cache.
    fn cached(file: &File, len: usize) -> Vec<bool> {
        // SAFETY: a read-only map of a test file, only handed to mincore (never read).
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(file).unwrap() };
        let mut v = vec![0u8; len.div_ceil(4096)];
        // SAFETY: the map is live and page aligned; one byte per page.
        let rc = unsafe { libc::mincore(map.as_ptr() as *mut libc::c_void, len, v.as_mut_ptr()) };
        assert_eq!(rc, 0);
        v.iter().map(|b| b & 1 == 1).collect()
    }

    /// Minor page faults this thread has taken.
    fn thread_faults() -> i64 {
        // SAFETY: getrusage writes the struct it is given, which lives on this stack.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: as above; RUSAGE_THREAD counts this thread alone.
        assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) }, 0);
        u.ru_minflt
    }

    /// True on a kernel with `MADV_POPULATE_READ` (Linux 5.14+).
    fn kernel_populates() -> bool {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut v = release
            .split(|c: char| !c.is_ascii_digit())
            .map(|x| x.parse::<u32>());
        match (v.next(), v.next()) {
            (Some(Ok(major)), Some(Ok(minor))) => (major, minor) >= (5, 14),
            _ => false,
        }
    }

    #[test]
    fn windows_read_in_place_keep_only_the_pages_cached_before() {
        let len = (24 << 20) + 5000;
        let data: Vec<u8> = (0..len).map(|i| (i * 13 % 251) as u8).collect();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&data).unwrap();
        f.as_file().sync_all().unwrap();
        let file = f.reopen().unwrap();
        // windows populated in one call, then faulted in by touch (older kernels), on the same file
        for populate in [true, false] {
            fadvise_dontneed(file.as_raw_fd(), 0, len as u64);
            if cached(&file, len).iter().filter(|&&c| c).count() > len / 4096 / 10 {
                return; // this file system does not evict on request (tmpfs): nothing to observe
            }
            // cache two stretches (one inside a window, one across a window boundary) before the pass
            let keep = [
                (3 << 20, (5 << 20) + 4096),
                ((8 << 20) - 8192, (9 << 20) + 100),
            ];
            for &(a, b) in &keep {
                let mut buf = vec![0u8; b - a];
                file.read_exact_at(&mut buf, a as u64).unwrap();
            }
            let before = cached(&file, len);
            let mut fs = FileSource::new(&file, len as u64);
            if !populate {
                fs = fs.touching();
            }
            let map = fs.map().expect("a local file is mapped");
            let window = 8u64 << 20;
            let mut off = 0;
            let mut faults = 0;
            while off < len as u64 {
                let n = window.min(len as u64 - off);
                assert_eq!(fs.bring(off, n).unwrap(), n);
                let (a, b) = (off as usize, (off + n) as usize);
                let f0 = thread_faults();
                assert!(map[a..b] == data[a..b], "window at {off} read wrong bytes");
                faults += thread_faults() - f0;
                fs.release(off, n);
                off += n;
            }
            assert!(!map.faulted());
            if populate {
                assert_eq!(fs.populate, kernel_populates());
                if fs.populate {
                    // the page tables were filled before the bytes were read: no fault per page
                    assert!(faults < 16, "{faults} faults reading populated windows");
                }
            }
            let after = cached(&file, len);
            for (p, (&b, &a)) in before.iter().zip(&after).enumerate() {
                assert!(
                    !b || a,
                    "page {p} was cached before the pass and was dropped (populate: {populate})"
                );
            }
            let brought = after.iter().zip(&before).filter(|(&a, &b)| a && !b).count();
            assert!(
                brought < len / 4096 / 10,
                "{brought} pages left cached (populate: {populate})"
            );
        }
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
