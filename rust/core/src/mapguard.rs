//! File maps that survive the file shrinking under them: a SIGBUS inside one becomes zeros and a flag.
//!
//! Reading a page of a mapped file past its current end raises SIGBUS, which kills the process (the
//! report of every other file with it). Every map the scanner makes is registered here; a process-wide
//! SIGBUS handler looks the faulting address up and, when it lies in a registered map, maps anonymous
//! zero pages over the rest of that map and sets the map's `faulted` flag. The read that faulted then
//! resumes and sees zeros; the scanner checks [`GuardedMap::faulted`] after reading and reports the file
//! as truncated, never trusting what it read. Faults elsewhere go to the handler installed before ours
//! (Python's `faulthandler`, or the default action).

use std::fs::File;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

/// Maps registered at once; more concurrent maps than this are refused (an `io` error for that file).
const SLOTS: usize = 1024;

struct Slot {
    start: AtomicUsize,
    len: AtomicUsize,
    faulted: AtomicBool,
    used: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    faulted: AtomicBool::new(false),
    used: AtomicBool::new(false),
};
static SLOTS_TABLE: [Slot; SLOTS] = [EMPTY; SLOTS];
/// The SIGBUS action in place before ours (leaked, never freed), for faults outside our maps.
static PREVIOUS: AtomicPtr<libc::sigaction> = AtomicPtr::new(std::ptr::null_mut());

/// A read-only map of a file whose faults past the file's end are caught (see the module doc).
pub struct GuardedMap {
    map: memmap2::Mmap,
    slot: usize,
}

impl GuardedMap {
    /// Maps the first `size` bytes of `file` read-only and registers the map with the SIGBUS guard.
    pub fn new(file: &File, size: u64) -> std::io::Result<GuardedMap> {
        if size == 0 {
            return Err(std::io::Error::other("empty file"));
        }
        install();
        // SAFETY: a read-only map; a file truncated under it faults, and those faults are turned into
        // zero pages plus the `faulted` flag by the handler once the map is registered just below,
        // before any byte of it is read.
        let map = unsafe { memmap2::MmapOptions::new().len(size as usize).map(file)? };
        let slot = (0..SLOTS)
            .find(|&i| {
                SLOTS_TABLE[i]
                    .used
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            })
            .ok_or_else(|| std::io::Error::other("too many files mapped at once"))?;
        let s = &SLOTS_TABLE[slot];
        s.faulted.store(false, Ordering::Relaxed);
        s.len.store(map.len(), Ordering::Relaxed);
        s.start.store(map.as_ptr() as usize, Ordering::Release);
        Ok(GuardedMap { map, slot })
    }

    /// True when a read hit a page past the file's end: the bytes read from there on were zeros.
    pub fn faulted(&self) -> bool {
        SLOTS_TABLE[self.slot].faulted.load(Ordering::Acquire)
    }

    /// The underlying map (for advice and residency calls).
    pub fn map(&self) -> &memmap2::Mmap {
        &self.map
    }
}

impl Deref for GuardedMap {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for GuardedMap {
    fn drop(&mut self) {
        // Unregister before the map itself is unmapped (fields drop after this body).
        let s = &SLOTS_TABLE[self.slot];
        s.start.store(0, Ordering::Release);
        s.len.store(0, Ordering::Release);
        s.used.store(false, Ordering::Release);
    }
}

/// Installs the handler unless it is the current SIGBUS action (someone may have replaced it since).
fn install() {
    // SAFETY: sigaction with a null new action only reads the current one into `cur`.
    let mut cur: libc::sigaction = unsafe { std::mem::zeroed() };
    if unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut cur) } != 0 {
        return;
    }
    if cur.sa_sigaction == on_sigbus as *const () as usize {
        return;
    }
    // SAFETY: `new` is fully initialised: our handler, SA_SIGINFO (it reads si_addr), SA_NODEFER so a
    // fault in a handler we chain to is not blocked, and an empty mask.
    unsafe {
        let mut new: libc::sigaction = std::mem::zeroed();
        new.sa_sigaction = on_sigbus as *const () as usize;
        new.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER | libc::SA_ONSTACK;
        libc::sigemptyset(&mut new.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGBUS, &new, &mut old) == 0 {
            PREVIOUS.store(Box::into_raw(Box::new(old)), Ordering::Release);
        }
    }
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler; si_addr is the faulting
    // address for SIGBUS.
    let addr = unsafe { (*info).si_addr() } as usize;
    for s in &SLOTS_TABLE {
        let start = s.start.load(Ordering::Acquire);
        let len = s.len.load(Ordering::Acquire);
        if start == 0 || addr < start || addr >= start + len {
            continue;
        }
        // SAFETY: sysconf and mmap are plain system calls (no locks, no allocation: safe in a signal
        // handler). MAP_FIXED replaces, inside our own live map, the pages from the faulting one to the
        // map's end with private zero pages, so the faulting read resumes and reads zeros; the map's
        // owner unmaps the whole range as usual when it drops.
        unsafe {
            let page = libc::sysconf(libc::_SC_PAGESIZE).max(4096) as usize;
            let from = addr / page * page;
            let end = start + len;
            let p = libc::mmap(
                from as *mut libc::c_void,
                end - from,
                libc::PROT_READ,
                libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p != libc::MAP_FAILED {
                s.faulted.store(true, Ordering::Release);
                return;
            }
        }
    }
    chain(sig, info, ctx);
}

/// Hands a fault that is not ours to the action installed before ours (the default one: reset, so the
/// faulting instruction faults again and the process dies as it would have).
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let prev = PREVIOUS.load(Ordering::Acquire);
    // SAFETY: PREVIOUS is null or a leaked, never freed sigaction; calling its handler with the
    // arguments we were given is what the kernel would have done had ours not been installed.
    unsafe {
        let h = if prev.is_null() {
            libc::SIG_DFL
        } else {
            (*prev).sa_sigaction
        };
        if h == libc::SIG_DFL || h == libc::SIG_IGN {
            libc::signal(sig, libc::SIG_DFL);
        } else if (*prev).sa_flags & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                std::mem::transmute(h);
            f(sig, info, ctx);
        } else {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(h);
            f(sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reading_past_a_shrunk_file_gives_zeros_and_a_flag() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![7u8; 3 * 65536]).unwrap();
        let map = GuardedMap::new(&f, 3 * 65536).unwrap();
        assert_eq!(map[10], 7);
        assert!(!map.faulted());
        f.set_len(100).unwrap();
        // Volatile, so the compiler cannot reuse the byte read above or skip the read.
        // SAFETY: the index is inside the map's length.
        let past = unsafe { std::ptr::read_volatile(map.as_ptr().add(2 * 65536 + 5)) };
        assert_eq!(past, 0);
        assert!(map.faulted());
        let sum: u64 = map[65536..].iter().map(|&b| b as u64).sum();
        assert_eq!(sum, 0, "every byte past the fault reads as zero");
        drop(map);
        let again = GuardedMap::new(&f, 100).unwrap();
        assert!(
            !again.faulted(),
            "a slot's flag does not leak to the next map"
        );
    }
}
