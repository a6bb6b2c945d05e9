//! The one pass over a file's bytes that feeds every hasher and value check (contract §5).
//!
//! The bytes come from a [`ChunkSource`] (a local file, bytes in memory, a remote object) in large
//! chunks, in order: windows of a local file's map, read in place, or copies into reused buffers. A
//! reader thread runs ahead of the consumers (bringing the next windows into memory, or reading the
//! next chunks). Each chunk goes to every consumer at once as `(offset, bytes)` ([`Chunk`]): the
//! whole-file hashers ([`crate::hashes`]), the component hash segments of the tensors in it
//! ([`crate::component_hash`]), the NaN/Inf counters ([`crate::values`]) and, when asked, the lineage
//! fingerprint samplers ([`crate::fingerprint`]). A tensor's stretch is cut into units hashed on every
//! core, each unit's values checked right after its hash while its bytes are still in the CPU cache.
//! Memory stays bounded by the windows in flight whatever the file's size; the source drops behind it
//! what it brought into the page cache.

use crate::classify::Classification;
use crate::component_hash::{Member, Plan};
use crate::fingerprint;
use crate::hashes::{self, FileHashers};
use crate::report::{Finding, Hashes, Severity};
use crate::source::ChunkSource;
use crate::tensor::TensorInfo;
use crate::values::{self, Counts, Same};
use rayon::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// Which hashes the pass computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashMode {
    /// No data pass at all: header-level checks only.
    None,
    /// Component hashes and value checks, no whole-file hashes.
    Components,
    /// Whole-file hashes as well.
    Full,
}

/// What the data pass produced.
#[derive(Default)]
pub struct DataPass {
    pub hashes: Hashes,
    /// component name -> canonical component hash v1
    pub components: BTreeMap<String, String>,
    pub findings: Vec<Finding>,
    /// The pass was abandoned through `Source::stop`: nothing in it may be reported or cached.
    pub stopped: bool,
    /// The lineage fingerprint, when asked for (`run_with`).
    pub fingerprint: Option<crate::fingerprint::Fingerprint>,
    /// Reading the bytes failed: nothing in the pass may be reported.
    pub io_error: Option<std::io::Error>,
}

/// Everything the pass reads: the bytes and what the header said about them.
pub struct Source<'a> {
    pub bytes: &'a mut dyn ChunkSource,
    pub tensors: &'a [TensorInfo],
    pub class: &'a Classification,
    /// The `__metadata__` of a safetensors file (`None` for other formats: no addnet hash).
    pub safetensors_metadata: Option<&'a BTreeMap<String, Value>>,
    /// Set by another thread to abandon the pass (checked between chunks): the result is then partial.
    pub stop: Option<&'a AtomicBool>,
}

/// One chunk of the pass as the consumers see it: its bytes at `offset`, and the few bytes around its
/// start, so that an element straddling two chunks can be read whole with the chunk holding its end.
pub struct Chunk<'a> {
    pub offset: u64,
    pub bytes: &'a [u8],
    /// Bytes `[seam_from, seam_from + seam_len)`: up to 8 before `offset` and up to 8 from it.
    seam: [u8; 2 * SEAM],
    seam_from: u64,
    seam_len: usize,
}

/// Widest element read across a chunk boundary (F64/I64).
const SEAM: usize = 8;

impl<'a> Chunk<'a> {
    /// The chunk `bytes` at `offset`, after a chunk that ended with `before` (its last bytes).
    fn new(offset: u64, bytes: &'a [u8], before: &[u8]) -> Chunk<'a> {
        let before = &before[before.len().saturating_sub(SEAM)..];
        let after = &bytes[..bytes.len().min(SEAM)];
        let mut seam = [0u8; 2 * SEAM];
        seam[..before.len()].copy_from_slice(before);
        seam[before.len()..before.len() + after.len()].copy_from_slice(after);
        Chunk {
            offset,
            bytes,
            seam,
            seam_from: offset - before.len() as u64,
            seam_len: before.len() + after.len(),
        }
    }

    /// Offset just past the chunk.
    pub fn end(&self) -> u64 {
        self.offset + self.bytes.len() as u64
    }

    /// The chunk's bytes in the file range `[lo, hi)` (which must lie inside it).
    pub fn range(&self, lo: u64, hi: u64) -> &[u8] {
        &self.bytes[(lo - self.offset) as usize..(hi - self.offset) as usize]
    }

    /// The `n` (at most 8) bytes at file offset `at` when they lie in the chunk or straddle its start.
    pub fn get(&self, at: u64, n: u64) -> Option<&[u8]> {
        if at >= self.offset && at + n <= self.end() {
            Some(self.range(at, at + n))
        } else if at >= self.seam_from && at + n <= self.seam_from + self.seam_len as u64 {
            let i = (at - self.seam_from) as usize;
            Some(&self.seam[i..i + n as usize])
        } else {
            None
        }
    }
}

/// Bytes the reader hands to the consumers at a time (small enough to stay in the CPU cache while
/// every consumer reads them, and to bound the mapped pages resident per file).
const READ_CHUNK: u64 = 8 << 20;
/// Tensor pieces at least this long are counted on several threads.
const PAR_PIECE: usize = 1 << 20;

/// Reads the file once and feeds hashers and value checks.
pub fn run(src: &mut Source, mode: HashMode, sha256: bool) -> DataPass {
    run_with(src, mode, sha256, false)
}

/// [`run`], also sampling the lineage fingerprint when `fingerprint` is set (and `mode` reads data).
pub fn run_with(src: &mut Source, mode: HashMode, sha256: bool, fingerprint: bool) -> DataPass {
    let mut out = DataPass::default();
    if mode == HashMode::None {
        return out;
    }
    let size = src.bytes.len();
    let tensors = src.tensors;
    let mut plan = Plan::new(tensors, src.class);
    // Lineage fingerprint samplers: a consumer of its own, fed after each chunk's jobs.
    let mut prints = fingerprint.then(|| fingerprint::Plan::new(tensors, src.class));
    // Tensors whose bytes the pass needs: in a component, checked for NaN/Inf or sampled, and wholly present.
    let wanted: Vec<bool> = tensors
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (plan.members[i].is_some()
                || values::element_size(t.dtype).is_some()
                || prints.as_ref().is_some_and(|p| p.wants(i)))
                && span(t).1 <= size
        })
        .collect();
    let mut contiguous: Vec<usize> = (0..tensors.len())
        .filter(|&i| wanted[i] && gather_layout(&tensors[i]).is_none())
        .collect();
    contiguous.sort_by_key(|&i| tensors[i].start);
    let mut strided: Vec<usize> = (0..tensors.len())
        .filter(|&i| wanted[i] && gather_layout(&tensors[i]).is_some())
        .collect();
    strided.sort_by_key(|&i| span(&tensors[i]).1);

    let mut counts = vec![Counts::default(); tensors.len()];
    let mut same = vec![Same::default(); tensors.len()];
    let mut file_h: Option<FileHashers> = None;
    let mut before = [0u8; SEAM];
    let mut before_len = 0;
    let spans: Vec<(usize, u64, u64)> = strided
        .iter()
        .map(|&i| {
            let (lo, hi) = span(&tensors[i]);
            (i, lo, hi)
        })
        .collect();
    let stop = src.stop;

    let mut next = 0;
    let mut active: Vec<usize> = Vec::new();
    let map = src.bytes.map();
    let reader = Reader {
        bytes: &mut *src.bytes,
        size,
        c0: 0,
        // A mapped file read inline comes in one window: its component streams are hashed in one go.
        window: if map.is_some() && size <= INLINE_MAX {
            size.max(1)
        } else if map.is_some() {
            MAP_WINDOW
        } else {
            READ_CHUNK
        },
        warm_window: match map.is_some() {
            true => WARM_WINDOW,
            false => 0,
        },
        spans: &spans,
        next_span: 0,
        stop,
    };
    let ended = std::thread::scope(|scope| {
        let mut feed = Feed::start(scope, reader, map.is_some());
        while let Some(piece) = feed.next() {
            if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                return Ended::Stopped;
            }
            let (c0, slot, n) = match piece {
                Piece::Chunk(c0, buf, n) => (c0, Slot::Buf(buf), n),
                Piece::Window(c0, n) => (c0, Slot::Window(Some((c0, n as u64))), n),
                Piece::Span(i, lo, gathered) => {
                    let mut local = tensors[i].clone();
                    local.start -= lo;
                    let seg = plan.members[i].as_mut().map(|m| &mut m.segment);
                    let (c, s) = strided_tensor(&gathered, &local, seg);
                    counts[i] += c;
                    same[i] = s;
                    if let (Some(p), Some((_, strides))) = (prints.as_mut(), gather_layout(&local))
                    {
                        p.strided(i, &gathered, &local, strides);
                    }
                    continue;
                }
                Piece::Shrank(now) => return Ended::Shrank(now),
                Piece::Failed(e) => return Ended::Failed(e),
                Piece::Stopped => return Ended::Stopped,
            };
            let bytes = match (&slot, &map) {
                (Slot::Buf(buf), _) => &buf.0[..n],
                (Slot::Window(_), Some(m)) => &m[c0 as usize..c0 as usize + n],
                (Slot::Window(_), None) => unreachable!("windows come only from a mapped source"),
            };
            let chunk = Chunk::new(c0, bytes, &before[..before_len]);
            let c1 = chunk.end();
            if c0 == 0 && mode == HashMode::Full {
                let addnet_from = src
                    .safetensors_metadata
                    .and_then(|_| hashes::addnet_start(chunk.bytes, size));
                file_h = Some(FileHashers::new(size, sha256, addnet_from));
            }
            while next < contiguous.len() && tensors[contiguous[next]].start < c1 {
                active.push(contiguous[next]);
                next += 1;
            }
            // The whole file in one chunk (a small one): component streams hashed in one go, in
            // canonical order, at full SIMD width, each tensor's values checked right after its hash
            // ([`Plan::hash_whole`]); the jobs then count the values of the other tensors.
            let whole = c0 == 0 && c1 == size && strided.is_empty();
            let plan_now = &mut plan;
            let active_now = &active;
            let prints_now = prints.as_mut();
            let (_, done) = rayon::join(
                || {
                    if let Some(h) = file_h.as_mut() {
                        h.feed(chunk.bytes);
                    }
                    // beside the hashing, not between chunks while the other cores wait
                    if let Some(p) = prints_now {
                        for &i in active_now {
                            p.contiguous(i, &tensors[i], &chunk);
                        }
                    }
                },
                || {
                    let mut done = Vec::new();
                    if whole {
                        let side = |i: usize, a, b| count_range(&chunk, &tensors[i], a, b);
                        let contiguous = |i: usize| gather_layout(&tensors[i]).is_none();
                        for (i, (c, s)) in
                            plan_now.hash_whole(tensors, chunk.bytes, contiguous, side)
                        {
                            done.push((i, None, c, s));
                        }
                    }
                    let mut hashed = vec![false; tensors.len()];
                    for d in &done {
                        hashed[d.0] = true;
                    }
                    // Each job owns its tensor's segment while the chunk is processed.
                    let jobs: Vec<(usize, Option<Member>)> = active_now
                        .iter()
                        .filter(|&&i| !hashed[i])
                        .map(|&i| (i, plan_now.members[i].take()))
                        .collect();
                    done.par_extend(jobs.into_par_iter().map(|(i, mut m)| {
                        let seg = m.as_mut().map(|m| &mut m.segment);
                        let (c, s) = contiguous_piece(&chunk, &tensors[i], seg);
                        (i, m, c, s)
                    }));
                    done
                },
            );
            for (i, m, c, s) in done {
                plan.members[i] = m;
                counts[i] += c;
                same[i] = same[i].merge(s);
            }
            active.retain(|&i| tensors[i].end() > c1);
            before_len = n.min(SEAM);
            before[..before_len].copy_from_slice(&bytes[n - before_len..]);
            feed.recycle(slot);
            // A read past the end of a file that shrank under the map read zeros: nothing is trusted.
            if map.as_ref().is_some_and(|m| m.faulted()) {
                return Ended::Faulted(c0);
            }
        }
        Ended::Done
    });
    match ended {
        Ended::Done => {}
        Ended::Stopped => {
            out.stopped = true;
            return out;
        }
        Ended::Shrank(now) => return shrank(out, size, now),
        Ended::Faulted(c0) => {
            let now = src.bytes.shrunk().unwrap_or(c0);
            return shrank(out, size, now);
        }
        Ended::Failed(e) => {
            out.io_error = Some(e);
            return out;
        }
    }

    if let Some(h) = file_h {
        out.hashes = h.finish();
        if let Some(meta) = src.safetensors_metadata {
            out.findings
                .extend(hashes::addnet_mismatch(meta, out.hashes.addnet.as_deref()));
        }
    }
    // the streams' subtrees joined beside the fingerprints' sums
    (out.components, out.fingerprint) =
        rayon::join(|| plan.finish(), || prints.map(|p| p.finish(tensors)));
    out.findings.extend(values::finding(tensors, &counts));
    out.findings
        .extend(values::constant_finding(tensors, &src.class.roles, &same));
    out
}

/// The pass over tensors held in memory, each in its own buffer (`pieces[i]`: the C-contiguous bytes
/// of `tensors[i]`): component hashes and value checks exactly as a file's pass computes them. There
/// is no file, so no whole-file hashes; tensors whose buffer is not their size are skipped.
pub fn run_pieces(tensors: &[TensorInfo], pieces: &[&[u8]], class: &Classification) -> DataPass {
    let mut out = DataPass::default();
    let mut plan = Plan::new(tensors, class);
    let jobs: Vec<(usize, Option<Member>)> = (0..tensors.len())
        .filter(|&i| {
            pieces
                .get(i)
                .is_some_and(|p| p.len() as u64 == tensors[i].len)
        })
        .map(|i| (i, plan.members[i].take()))
        .collect();
    let done: Vec<_> = jobs
        .into_par_iter()
        .map(|(i, mut m)| {
            // The tensor as if it were alone in a file of its own bytes.
            let alone = TensorInfo {
                start: 0,
                strides: None,
                ..tensors[i].clone()
            };
            let seg = m.as_mut().map(|m| &mut m.segment);
            let (c, s) = contiguous_piece(&Chunk::new(0, pieces[i], &[]), &alone, seg);
            (i, m, c, s)
        })
        .collect();
    let mut counts = vec![Counts::default(); tensors.len()];
    let mut same = vec![Same::default(); tensors.len()];
    for (i, m, c, s) in done {
        plan.members[i] = m;
        counts[i] = c;
        same[i] = s;
    }
    out.components = plan.finish();
    out.findings.extend(values::finding(tensors, &counts));
    out.findings
        .extend(values::constant_finding(tensors, &class.roles, &same));
    out
}

/// How a pass's reading ended.
enum Ended {
    Done,
    Stopped,
    Shrank(u64),
    /// A read of the map hit a page past the file's end, in the window at this offset.
    Faulted(u64),
    Failed(std::io::Error),
}

/// What the reader hands the consumers, in file order.
enum Piece {
    /// The chunk at this offset: its first `n` bytes of a buffer to recycle.
    Chunk(u64, Buf, usize),
    /// The `n` bytes at this offset of the source's map, brought into memory.
    Window(u64, usize),
    /// The whole span `[lo, ..)` of strided tensor `i`, after the chunk holding its end.
    Span(usize, u64, Vec<u8>),
    /// The object is now this long, shorter than when the scan started.
    Shrank(u64),
    Failed(std::io::Error),
    Stopped,
}

/// Chunk buffers (or map windows) per pass when the reader runs ahead on its own thread: one being
/// read, one being consumed, one ready (memory: this many times [`READ_CHUNK`] or [`MAP_WINDOW`] per
/// file in flight).
const BUFFERS: usize = 3;

/// Bytes of a mapped file the consumers are handed at a time. Resident while in flight (page tables
/// filled ahead, unmapped once read), so [`BUFFERS`] of them bound the pass's share of resident memory.
const MAP_WINDOW: u64 = 8 << 20;

/// Bytes of a mapped file handed to the consumers at a time when all of them are in the page cache
/// already: nothing to read, and no page resident before its reader faults it in, so a longer window
/// costs no memory, and the cores meet between windows an eighth as often (each meeting idles one
/// while the other finishes, then wakes it; each window's start and release cost CPU too: a cached
/// 2.1 GB checkpoint's components pass took 3.5% less time, 17 ms less user CPU, with 64 MiB windows
/// than with 32 MiB, and no less with 128 MiB). Its pages are resident from their reader's fault to
/// the window's end, so this bounds the pass's resident memory over a cached file.
const WARM_WINDOW: u64 = 64 << 20;

/// Mapped files up to this long are read on the consumers' thread, window by window, with no reader
/// thread: a thread's start (a fresh stack and allocator heap, faulted in) costs more than its running
/// ahead saves on a file this short, and the other files in flight keep the cores busy meanwhile.
const INLINE_MAX: u64 = 32 << 20;

/// What goes back from the consumers to the reader: a chunk buffer to refill, or a map window token
/// (`Some`: the window it carried, read and to be released).
enum Slot {
    Buf(Buf),
    Window(Option<(u64, u64)>),
}

/// Chunk buffers kept between passes, so that a library of small files does not allocate and fault
/// in fresh buffers for every file (24 MiB per file of more than one chunk).
static POOL: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
/// Most buffers the pool keeps: those of one pass per core, and never more than 96 MiB. Asked once:
/// the core count comes from the scheduler and cgroup files (a dozen system calls).
fn pool_max() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (BUFFERS * cores).min(12)
    })
}

/// A [`READ_CHUNK`]-long buffer taken from the pool (or made); it goes back to the pool when dropped,
/// wherever the pass left it (the reader's channel, a consumer, an early return).
struct Buf(Vec<u8>);

impl Buf {
    fn take() -> Buf {
        let pooled = POOL.lock().ok().and_then(|mut p| p.pop());
        Buf(pooled.unwrap_or_else(|| vec![0u8; READ_CHUNK as usize]))
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        if let Ok(mut p) = POOL.lock() {
            if p.len() < pool_max() {
                p.push(v);
            }
        }
    }
}

/// Reads a source's chunks in order, and the spans of strided tensors after the chunk holding their end.
struct Reader<'a> {
    bytes: &'a mut dyn ChunkSource,
    size: u64,
    c0: u64,
    /// Bytes per chunk or window.
    window: u64,
    /// Bytes per window when they are all cached already (0: windows of `window` bytes only).
    warm_window: u64,
    /// (tensor, span start, span end) by span end.
    spans: &'a [(usize, u64, u64)],
    next_span: usize,
    stop: Option<&'a AtomicBool>,
}

impl Reader<'_> {
    /// The next piece, reading a chunk into a buffer (or bringing a window) from `take` (`None`: no
    /// slot, stop); `None` at the end.
    fn next(&mut self, take: impl FnOnce() -> Option<Slot>) -> Option<Piece> {
        if let Some(&(i, lo, hi)) = self.spans.get(self.next_span) {
            if hi <= self.c0 {
                self.next_span += 1;
                let mut gathered = vec![0u8; (hi - lo) as usize];
                return Some(match self.bytes.read_at(lo, &mut gathered) {
                    Ok(n) if n == gathered.len() => Piece::Span(i, lo, gathered),
                    Ok(n) => Piece::Shrank(self.bytes.shrunk().unwrap_or(lo + n as u64)),
                    Err(e) => Piece::Failed(e),
                });
            }
        }
        if self.c0 >= self.size {
            return None;
        }
        if self.stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            return Some(Piece::Stopped);
        }
        if let Some(now) = self.bytes.shrunk() {
            return Some(Piece::Shrank(now));
        }
        let c0 = self.c0;
        let mut want = (self.window.min(self.size - c0)) as usize;
        let warm = self.warm_window.min(self.size - c0);
        if warm > want as u64 && self.bytes.cached(c0, warm) {
            want = warm as usize;
        }
        let Some(slot) = take() else {
            return Some(Piece::Stopped);
        };
        self.c0 += want as u64;
        let mut buf = match slot {
            Slot::Buf(buf) => buf,
            Slot::Window(done) => {
                // The next window first, then the last one's release: a fault bringing the next
                // window in reads around it (backwards too), and would read back into the cache
                // pages of the last one just dropped (an inline reader's only window in flight).
                let brought = self.bytes.bring(c0, want as u64);
                self.release(done);
                return Some(match brought {
                    Ok(n) if n == want as u64 => Piece::Window(c0, want),
                    Ok(n) => Piece::Shrank(self.bytes.shrunk().unwrap_or(c0 + n)),
                    Err(e) => Piece::Failed(e),
                });
            }
        };
        Some(match self.bytes.next_chunk(c0, &mut buf.0[..want]) {
            Ok(n) if n == want => Piece::Chunk(c0, buf, n),
            Ok(n) => Piece::Shrank(self.bytes.shrunk().unwrap_or(c0 + n as u64)),
            Err(e) => Piece::Failed(e),
        })
    }

    /// Releases a map window the consumers are done with.
    fn release(&mut self, done: Option<(u64, u64)>) {
        if let Some((off, len)) = done {
            self.bytes.release(off, len);
        }
    }
}

/// The consumers' end of the reader: inline for a file of one chunk, else a thread running ahead.
enum Feed<'a> {
    Inline(Reader<'a>, Option<Slot>),
    Ahead(
        std::sync::mpsc::Receiver<Piece>,
        std::sync::mpsc::Sender<Slot>,
    ),
}

impl<'a> Feed<'a> {
    /// The feed of `reader`, over map windows when `mapped`, else over chunk buffers.
    fn start<'s>(
        scope: &'s std::thread::Scope<'s, '_>,
        mut reader: Reader<'a>,
        mapped: bool,
    ) -> Feed<'a>
    where
        'a: 's,
    {
        let slot = || match mapped {
            true => Slot::Window(None),
            false => Slot::Buf(Buf::take()),
        };
        if reader.size <= reader.window || (mapped && reader.size <= INLINE_MAX) {
            return Feed::Inline(reader, Some(slot()));
        }
        let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Piece>(BUFFERS - 1);
        let (free_tx, free_rx) = std::sync::mpsc::channel::<Slot>();
        for _ in 0..BUFFERS {
            let _ = free_tx.send(slot());
        }
        scope.spawn(move || {
            // Ends at the end of the data, or when the consumers have gone (a send or a take fails).
            while let Some(p) = reader.next(|| free_rx.recv().ok()) {
                let last = !matches!(p, Piece::Chunk(..) | Piece::Window(..) | Piece::Span(..));
                if full_tx.send(p).is_err() || last {
                    break;
                }
            }
            // Then releases the windows the consumers give back, until they have gone.
            drop(full_tx);
            while let Ok(slot) = free_rx.recv() {
                if let Slot::Window(done) = slot {
                    reader.release(done);
                }
            }
        });
        Feed::Ahead(full_rx, free_tx)
    }

    fn next(&mut self) -> Option<Piece> {
        match self {
            Feed::Inline(r, spare) => r.next(|| spare.take()),
            Feed::Ahead(rx, _) => rx.recv().ok(),
        }
    }

    /// Gives a consumed chunk's buffer (or window) back to the reader.
    fn recycle(&mut self, slot: Slot) {
        match self {
            Feed::Inline(_, spare) => *spare = Some(slot),
            Feed::Ahead(_, tx) => {
                let _ = tx.send(slot);
            }
        }
    }
}

impl Drop for Feed<'_> {
    /// Releases the window an inline reader's consumer gave back last (the reader thread of a feed
    /// running ahead releases its own as the consumers go).
    fn drop(&mut self) {
        if let Feed::Inline(reader, Some(Slot::Window(done))) = self {
            reader.release(done.take());
        }
    }
}

/// The pass's result for a file that shrank from `size` to `now` bytes under it: a finding, no hash.
fn shrank(mut out: DataPass, size: u64, now: u64) -> DataPass {
    out.hashes = Hashes::default();
    out.components.clear();
    out.findings.clear();
    out.findings.push(Finding::new(
        "file.truncated",
        Severity::Error,
        format!("file shrank from {size} to {now} bytes while it was being scanned"),
        json!({"expected": size, "actual": now, "during_scan": true}),
    ));
    out
}

/// Feeds the part of a contiguous tensor inside `chunk` to its segment, counts its NaN/Inf and notes
/// whether its elements are all one value. The segment's units are hashed on every core, each unit's
/// elements checked by the thread that hashed it, right after the hash (the bytes still cached).
fn contiguous_piece(
    chunk: &Chunk,
    t: &TensorInfo,
    seg: Option<&mut crate::component_hash::Segment>,
) -> (Counts, Same) {
    let (lo, hi) = (t.start.max(chunk.offset), t.end().min(chunk.end()));
    let checked = values::element_size(t.dtype).is_some();
    let side = |a: usize, b: usize| match checked {
        true => count_range(chunk, t, lo + a as u64, lo + b as u64),
        false => (Counts::default(), Same::Empty),
    };
    let parts = match seg {
        Some(s) => s.feed_par(chunk.range(lo, hi), side),
        None if checked && hi - lo >= 2 * PAR_PIECE as u64 => {
            let n = (hi - lo) as usize;
            (0..n.div_ceil(PAR_PIECE))
                .into_par_iter()
                .map(|k| side(k * PAR_PIECE, ((k + 1) * PAR_PIECE).min(n)))
                .collect()
        }
        None => vec![side(0, (hi - lo) as usize)],
    };
    parts
        .into_iter()
        .fold((Counts::default(), Same::Empty), |(mut c, s), (pc, ps)| {
            c += pc;
            (c, s.merge(ps))
        })
}

/// NaN/Inf counts and sameness of the elements of contiguous tensor `t` whose last byte lies in the
/// file range `[a, b)` of `chunk` (one straddling `a` is read whole from the chunk or its seam).
fn count_range(chunk: &Chunk, t: &TensorInfo, a: u64, b: u64) -> (Counts, Same) {
    let Some(es) = values::element_size(t.dtype).map(|es| es as u64) else {
        return (Counts::default(), Same::Empty);
    };
    let both = |bytes: &[u8]| {
        (
            values::count(t.dtype, bytes),
            values::sameness(t.dtype, bytes),
        )
    };
    // element boundaries: the first at or after `a`, the last at or before `b`
    let first = t.start + (a - t.start).div_ceil(es) * es;
    let last = t.start + (b - t.start) / es * es;
    if first > b {
        return (Counts::default(), Same::Empty); // inside one element that ends after `b`
    }
    let mut acc = match first > a && first - es >= t.start {
        true => match chunk.get(first - es, es) {
            Some(bytes) => both(bytes),
            None => (Counts::default(), Same::Empty),
        },
        false => (Counts::default(), Same::Empty),
    };
    let main = both(chunk.range(first, last));
    acc.0 += main.0;
    (acc.0, acc.1.merge(main.1))
}

/// Element size and strides of a tensor that must be gathered (non-contiguous), else `None`.
fn gather_layout(t: &TensorInfo) -> Option<(u64, &[u64])> {
    let strides = t.strides.as_deref()?;
    let bits = t.dtype.bits();
    if !bits.is_multiple_of(8)
        || strides.len() != t.shape.len()
        || is_c_contiguous(&t.shape, strides)
    {
        return None;
    }
    Some((bits / 8, strides))
}

/// True when `strides` (in elements) lay out `shape` in C order: the tensor's bytes are contiguous.
pub(crate) fn is_c_contiguous(shape: &[u64], strides: &[u64]) -> bool {
    if strides.len() != shape.len() {
        return false;
    }
    let mut expect = 1;
    for (d, s) in shape.iter().zip(strides).rev() {
        if *d != 1 && *s != expect {
            return false;
        }
        expect *= d;
    }
    true
}

/// The byte range `[start, end)` a tensor's elements lie in.
pub fn span(t: &TensorInfo) -> (u64, u64) {
    match gather_layout(t) {
        Some((es, strides)) if t.elements() > 0 => {
            let last: u64 = t.shape.iter().zip(strides).map(|(d, s)| (d - 1) * s).sum();
            (t.start, t.start + (last + 1) * es)
        }
        _ => (t.start, t.end()),
    }
}

/// Feeds a non-contiguous tensor's elements in C order to its segment, counts its NaN/Inf and notes
/// whether they are all one value.
fn strided_tensor(
    data: &[u8],
    t: &TensorInfo,
    mut seg: Option<&mut crate::component_hash::Segment>,
) -> (Counts, Same) {
    let Some((es, strides)) = gather_layout(t) else {
        return (Counts::default(), Same::Empty);
    };
    let mut counts = (Counts::default(), Same::Empty);
    let mut buf: Vec<u8> = Vec::with_capacity(PAR_PIECE);
    let mut flush = |buf: &mut Vec<u8>, counts: &mut (Counts, Same)| {
        if let Some(s) = seg.as_mut() {
            s.feed_par(buf, |_, _| ());
        }
        counts.0 += values::count(t.dtype, buf);
        counts.1 = counts.1.merge(values::sameness(t.dtype, buf));
        buf.clear();
    };
    if t.elements() > 0 {
        let nd = t.shape.len();
        let mut idx = vec![0u64; nd];
        loop {
            let base: u64 = idx.iter().zip(strides).map(|(i, s)| i * s).sum();
            match nd {
                0 => {
                    let at = t.start as usize;
                    buf.extend_from_slice(&data[at..at + es as usize]);
                }
                _ => {
                    let (n, s) = (t.shape[nd - 1], strides[nd - 1]);
                    for k in 0..n {
                        let at = (t.start + (base + k * s) * es) as usize;
                        buf.extend_from_slice(&data[at..at + es as usize]);
                    }
                }
            }
            if buf.len() >= PAR_PIECE {
                flush(&mut buf, &mut counts);
            }
            // next index over all but the innermost dimension
            let mut d = nd.saturating_sub(1);
            loop {
                if d == 0 {
                    flush(&mut buf, &mut counts);
                    return counts;
                }
                d -= 1;
                idx[d] += 1;
                if idx[d] < t.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
    }
    flush(&mut buf, &mut counts);
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Role;
    use crate::dtype::Dtype;
    use crate::source::{fadvise_dontneed, FileSource, MemorySource};
    use std::fs::File;

    fn tensor(name: &str, dtype: Dtype, shape: &[u64], start: u64) -> TensorInfo {
        let len = shape.iter().product::<u64>() * dtype.bits() / 8;
        TensorInfo {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
            start,
            len,
            strides: None,
        }
    }

    fn class(roles: Vec<Role>) -> Classification {
        Classification {
            kind: crate::kind::Kind::Vae,
            arch: crate::kind::Arch::Sd1,
            roles,
            expected_text_encoders: vec![],
            identification: None,
            incomplete: vec![],
        }
    }

    /// The pass's input: `bytes` holding `tensors`, no metadata, never stopped.
    fn source<'a>(
        bytes: &'a mut dyn ChunkSource,
        tensors: &'a [TensorInfo],
        class: &'a Classification,
    ) -> Source<'a> {
        Source {
            bytes,
            tensors,
            class,
            safetensors_metadata: None,
            stop: None,
        }
    }

    fn vae(prefix_len: usize) -> Role {
        Role::Component {
            name: "vae",
            prefix_len,
        }
    }

    /// The v1 stream built directly: sorted canonical names, framing, contiguous C-order data.
    fn reference(items: &[(&str, &str, &[u64], Vec<u8>)]) -> String {
        let mut v: Vec<_> = items.iter().collect();
        v.sort_by_key(|x| x.0);
        let mut h = blake3::Hasher::new();
        for (name, dt, shape, d) in v {
            h.update(&crate::component_hash::framing(
                name,
                dt,
                shape,
                d.len() as u64,
            ));
            h.update(d);
        }
        h.finalize().to_hex().to_string()
    }

    #[test]
    fn component_hash_ignores_order_and_prefix() {
        let a: Vec<u8> = (0..3000u32).flat_map(|x| x.to_le_bytes()).collect();
        let b: Vec<u8> = (0..40u16).flat_map(|x| (x * 7).to_le_bytes()).collect();
        // file 1: prefixed names, b stored before a
        let mut f1 = vec![0u8; 16];
        f1.extend_from_slice(&b);
        let a_at = f1.len() as u64;
        f1.extend_from_slice(&a);
        let t1 = [
            tensor("first_stage_model.z", Dtype::F16, &[40], 16),
            tensor("first_stage_model.a", Dtype::F32, &[3000], a_at),
        ];
        let c1 = class(vec![vae(18), vae(18)]);
        // file 2: bare names, a first, with padding between
        let mut f2 = a.clone();
        f2.extend_from_slice(&[9; 13]);
        let b_at = f2.len() as u64;
        f2.extend_from_slice(&b);
        let t2 = [
            tensor("a", Dtype::F32, &[3000], 0),
            tensor("z", Dtype::F16, &[40], b_at),
        ];
        let c2 = class(vec![vae(0), vae(0)]);
        let run_on = |bytes: &[u8], t: &[TensorInfo], c: &Classification| {
            let mut src = Source {
                bytes: &mut MemorySource(bytes),
                tensors: t,
                class: c,
                safetensors_metadata: None,
                stop: None,
            };
            run(&mut src, HashMode::Components, false).components["vae"].clone()
        };
        let want = reference(&[
            ("a", "F32", &[3000], a.clone()),
            ("z", "F16", &[40], b.clone()),
        ]);
        assert_eq!(run_on(&f1, &t1, &c1), want);
        assert_eq!(run_on(&f2, &t2, &c2), want);
        // one changed data byte changes it
        let mut f3 = f2.clone();
        f3[100] ^= 1;
        assert_ne!(run_on(&f3, &t2, &c2), want);
    }

    #[test]
    fn strided_tensor_hashes_as_contiguous() {
        // a 3x4 F32 matrix stored transposed (column-major): strides (1, 3)
        let m: Vec<f32> = (0..12).map(|x| x as f32).collect();
        let c_order: Vec<u8> = m.iter().flat_map(|x| x.to_le_bytes()).collect();
        let mut stored = vec![0u8; 8];
        for c in 0..4 {
            for r in 0..3 {
                stored.extend_from_slice(&m[r * 4 + c].to_le_bytes());
            }
        }
        let mut t = tensor("w", Dtype::F32, &[3, 4], 8);
        t.strides = Some(vec![1, 3]);
        let c = class(vec![vae(0)]);
        let mut src = Source {
            bytes: &mut MemorySource(&stored),
            tensors: std::slice::from_ref(&t),
            class: &c,
            safetensors_metadata: None,
            stop: None,
        };
        let got = run(&mut src, HashMode::Components, false).components["vae"].clone();
        assert_eq!(got, reference(&[("w", "F32", &[3, 4], c_order.clone())]));
        assert_eq!(span(&t), (8, 8 + 48));
        // the same tensor across a chunk boundary of a file read ahead on the reader's thread
        let pad = READ_CHUNK as usize - 20;
        let mut far = vec![0u8; pad];
        far.extend_from_slice(&stored[8..]);
        far.extend_from_slice(&[1; 100]);
        t.start = pad as u64;
        let mut src = Source {
            bytes: &mut MemorySource(&far),
            tensors: std::slice::from_ref(&t),
            class: &c,
            safetensors_metadata: None,
            stop: None,
        };
        let got = run(&mut src, HashMode::Components, false).components["vae"].clone();
        assert_eq!(got, reference(&[("w", "F32", &[3, 4], c_order)]));
    }

    #[test]
    fn fingerprint_ignores_dtype_and_storage_order() {
        // a 300x400 matrix: F16 stored transposed (strides (1, 300)) vs the same values F32 in C order
        let (r, c) = (300usize, 400usize);
        let v: Vec<f32> = (0..r * c)
            .map(|i| ((i * 37 % 1001) as f32 - 500.0) / 64.0)
            .collect();
        let mut stored16 = vec![0u8; 4];
        for j in 0..c {
            for i in 0..r {
                let h = v[i * c + j];
                // exact in F16: multiples of 1/64 of magnitude below 8
                stored16.extend_from_slice(&f32_to_f16_exact(h).to_le_bytes());
            }
        }
        let mut t16 = tensor("w", Dtype::F16, &[r as u64, c as u64], 4);
        t16.strides = Some(vec![1, r as u64]);
        let c32: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let t32 = tensor("w", Dtype::F32, &[r as u64, c as u64], 0);
        let cl = class(vec![vae(0)]);
        let print = |bytes: &[u8], t: &TensorInfo| {
            let mut src = Source {
                bytes: &mut MemorySource(bytes),
                tensors: std::slice::from_ref(t),
                class: &cl,
                safetensors_metadata: None,
                stop: None,
            };
            run_with(&mut src, HashMode::Components, false, true)
                .fingerprint
                .unwrap()
        };
        let a = print(&stored16, &t16);
        assert_eq!(a, print(&c32, &t32));
        let d = a.components["vae"].decode().unwrap();
        let idx = crate::fingerprint::sample_indices("w", (r * c) as u64);
        let want: Vec<f64> = idx.iter().map(|&i| v[i as usize] as f64).collect();
        assert_eq!(d.tensors[0].3, want);
        assert!(run(
            &mut Source {
                bytes: &mut MemorySource(&c32),
                tensors: std::slice::from_ref(&t32),
                class: &cl,
                safetensors_metadata: None,
                stop: None,
            },
            HashMode::Components,
            false
        )
        .fingerprint
        .is_none());
    }

    /// F16 bits of a value exactly representable in F16 (normal range).
    fn f32_to_f16_exact(x: f32) -> u16 {
        if x == 0.0 {
            return 0;
        }
        let b = x.to_bits();
        let sign = ((b >> 16) & 0x8000) as u16;
        let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
        let man = ((b >> 13) & 0x3ff) as u16;
        sign | ((exp as u16) << 10) | man
    }

    #[test]
    fn truncated_tensors_are_skipped() {
        let mut bytes: Vec<u8> = f32::NAN.to_le_bytes().repeat(4);
        bytes.truncate(10);
        let t = [
            tensor("x", Dtype::F32, &[2], 0),
            tensor("y", Dtype::F32, &[2], 8),
        ];
        let c = class(vec![vae(0), vae(0)]);
        let mut src = Source {
            bytes: &mut MemorySource(&bytes),
            tensors: &t,
            class: &c,
            safetensors_metadata: None,
            stop: None,
        };
        let dp = run(&mut src, HashMode::Full, true);
        assert!(dp.components.is_empty());
        let f = &dp.findings[0];
        assert_eq!(f.details["nan"], 2);
        assert_eq!(f.details["tensors"][0]["name"], "x");
        assert_eq!(
            dp.hashes.blake3.unwrap(),
            blake3::hash(&bytes).to_hex().to_string()
        );
    }

    #[test]
    fn mode_none_reads_nothing() {
        let bytes = f32::NAN.to_le_bytes();
        let t = [tensor("x", Dtype::F32, &[1], 0)];
        let c = class(vec![vae(0)]);
        let mut src = Source {
            bytes: &mut MemorySource(&bytes),
            tensors: &t,
            class: &c,
            safetensors_metadata: None,
            stop: None,
        };
        let dp = run(&mut src, HashMode::None, true);
        assert!(dp.findings.is_empty() && dp.hashes.blake3.is_none());
    }
    /// Pages of `file` resident in the page cache.
    fn resident_pages(file: &File) -> usize {
        // SAFETY: read-only map of a file the test owns.
        let map = unsafe { memmap2::Mmap::map(file).unwrap() };
        let mut v = vec![0u8; map.len().div_ceil(4096)];
        // SAFETY: the map is live and page aligned; one byte per page.
        let rc =
            unsafe { libc::mincore(map.as_ptr() as *mut libc::c_void, map.len(), v.as_mut_ptr()) };
        assert_eq!(rc, 0);
        v.iter().filter(|b| **b & 1 == 1).count()
    }

    /// A LoRA-like file of `size` bytes: a 64-byte head, then many small F16 tensors of varied
    /// lengths (one NaN and one infinity in each of a few, one all-zero tensor), stored in reverse name
    /// order; returns the bytes, the tensors, and their (name, data) for the independent references.
    #[allow(clippy::type_complexity)]
    fn many_small_tensors(size: usize) -> (Vec<u8>, Vec<TensorInfo>, Vec<(String, Vec<u8>)>) {
        let mut bytes = vec![0xA5u8; 64];
        let (mut tensors, mut items) = (Vec::new(), Vec::new());
        let mut k = 0u64;
        while bytes.len() < size {
            // lengths from 2 bytes to ~80 KiB, odd chunk offsets included
            let elems = [1u64, 640, 5120, 10240, 20480, 40_961, 333][k as usize % 7];
            let elems = elems.min((size - bytes.len()) as u64 / 2).max(1);
            let mut data: Vec<u8> = (0..elems)
                .flat_map(|i| {
                    let v = ((i * 2_654_435_761 + k * 97) % 30_000) as u16; // finite F16 bits
                    v.to_le_bytes()
                })
                .collect();
            if k % 50 == 3 && elems > 2 {
                data[..2].copy_from_slice(&0x7e00u16.to_le_bytes()); // NaN
                data[2..4].copy_from_slice(&0x7c00u16.to_le_bytes()); // +Inf
            }
            if k == 11 {
                data.fill(0);
            }
            let name = format!("t{:05}", 100_000 - k);
            tensors.push(tensor(&name, Dtype::F16, &[elems], bytes.len() as u64));
            bytes.extend_from_slice(&data);
            items.push((name, data));
            k += 1;
        }
        (bytes, tensors, items)
    }

    #[test]
    fn small_files_read_inline_and_large_ones_read_ahead_report_alike() {
        // Either side of INLINE_MAX (read on the consumers' thread below it, by a reader thread
        // running ahead above it), mapped in place and copied into buffers, against BLAKE3 of the
        // whole file and the v1 stream built directly.
        for size in [
            300_001,
            (READ_CHUNK * 2 + 4097) as usize,
            (INLINE_MAX - 3) as usize,
            (INLINE_MAX + MAP_WINDOW + 1001) as usize,
        ] {
            let (bytes, t, items) = many_small_tensors(size);
            let c = class(vec![vae(0); t.len()]);
            let mut f = tempfile::NamedTempFile::new().unwrap();
            std::io::Write::write_all(&mut f, &bytes).unwrap();
            let file = f.reopen().unwrap();
            let mut fs = FileSource::new(&file, bytes.len() as u64);
            let mapped = run_with(&mut source(&mut fs, &t, &c), HashMode::Full, false, true);
            let copied = run_with(
                &mut source(&mut MemorySource(&bytes), &t, &c),
                HashMode::Full,
                false,
                true,
            );
            let want = blake3::hash(&bytes).to_hex().to_string();
            assert_eq!(
                mapped.hashes.blake3.as_deref(),
                Some(want.as_str()),
                "{size}"
            );
            let all = |h: &Hashes| serde_json::to_value(h).unwrap();
            assert_eq!(all(&mapped.hashes), all(&copied.hashes), "{size}");
            let refs: Vec<(&str, &str, &[u64], Vec<u8>)> = items
                .iter()
                .zip(&t)
                .map(|((n, d), ti)| (n.as_str(), "F16", &ti.shape[..], d.clone()))
                .collect();
            assert_eq!(mapped.components["vae"], reference(&refs), "{size}");
            assert_eq!(mapped.components, copied.components, "{size}");
            assert_eq!(mapped.fingerprint, copied.fingerprint, "{size}");
            let details = |dp: &DataPass| {
                let mut v: Vec<_> = dp
                    .findings
                    .iter()
                    .map(|f| (f.check, f.details.clone()))
                    .collect();
                v.sort_by(|a, b| a.0.cmp(b.0));
                v
            };
            assert_eq!(details(&mapped), details(&copied), "{size}");
            let nan = items
                .iter()
                .filter(|(_, d)| d.len() > 4 && d[..2] == [0x00, 0x7e])
                .count();
            let found = mapped
                .findings
                .iter()
                .find(|f| f.details.get("nan").is_some());
            assert_eq!(
                found.map(|f| f.details["nan"].clone()),
                Some(json!(nan)),
                "{size}"
            );
            assert_eq!(
                found.map(|f| f.details["inf"].clone()),
                Some(json!(nan)),
                "{size}"
            );
        }
    }

    #[test]
    fn drops_the_pages_it_read_and_keeps_cached_ones() {
        // a file read inline (up to INLINE_MAX) and one read by a reader thread running ahead
        for size in [
            2 * READ_CHUNK as usize + 12345,
            (INLINE_MAX + MAP_WINDOW) as usize + 12345,
        ] {
            drops_behind(size);
        }
    }

    #[test]
    fn short_cached_files_are_read_unmapped_and_left_cached() {
        use std::os::fd::AsRawFd;
        let size = 300_001usize;
        let (_f, file, data) = period_file(size);
        let want = blake3::hash(&data).to_hex().to_string();
        let pages = size.div_ceil(4096);
        let t = [tensor("x", Dtype::F32, &[(size / 4 - 100) as u64], 100)];
        let c = class(vec![vae(0)]);
        // wholly cached: read by pread, and every page stays cached
        let mut sink = vec![0u8; size];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut sink, 0).unwrap();
        let mut fs = FileSource::new(&file, size as u64);
        assert!(fs.map().is_none());
        let before = resident_pages(&file);
        let warm = run(&mut source(&mut fs, &t, &c), HashMode::Full, false);
        assert!(resident_pages(&file) >= before * 99 / 100);
        assert_eq!(warm.hashes.blake3.as_deref(), Some(want.as_str()));
        // evicted: mapped, and the pages it brought are dropped after
        fadvise_dontneed(file.as_raw_fd(), 0, size as u64);
        if resident_pages(&file) > pages / 10 {
            return; // this file system does not evict on request (tmpfs): nothing to observe
        }
        let mut fs = FileSource::new(&file, size as u64);
        assert!(fs.map().is_some());
        let cold = run(&mut source(&mut fs, &t, &c), HashMode::Full, false);
        assert!(resident_pages(&file) < pages / 10);
        assert_eq!(cold.hashes.blake3, warm.hashes.blake3);
        assert_eq!(cold.components, warm.components);
        assert!(!cold.components.is_empty());
    }

    /// A file of `size` bytes of period 251 (a window read from the wrong offset would not hash the
    /// same), written through to disk: the temporary file, a handle to it, and its bytes.
    fn period_file(size: usize) -> (tempfile::NamedTempFile, File, Vec<u8>) {
        use std::io::Write;
        let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&data).unwrap();
        f.as_file().sync_all().unwrap();
        let file = f.reopen().unwrap();
        (f, file, data)
    }

    fn drops_behind(size: usize) {
        use std::os::fd::AsRawFd;
        let (_f, file, data) = period_file(size);
        let want = blake3::hash(&data).to_hex().to_string();
        let pages = size.div_ceil(4096);
        let t = [tensor("x", Dtype::F32, &[(size / 4 - 100) as u64], 100)];
        let c = class(vec![vae(0)]);
        let mut passes = Vec::new();
        // windows populated in one call, then faulted in by touch (older kernels), on the same file
        for populate in [true, false] {
            fadvise_dontneed(file.as_raw_fd(), 0, size as u64);
            if resident_pages(&file) > pages / 10 {
                return; // this file system does not evict on request (tmpfs): nothing to observe
            }
            let mut fs = FileSource::new(&file, size as u64);
            if !populate {
                fs = fs.touching();
            }
            let mut src = source(&mut fs, &t, &c);
            let cold = run(&mut src, HashMode::Full, false);
            assert!(
                resident_pages(&file) < pages / 10,
                "cold pass left its pages cached (populate: {populate})"
            );
            // warm: every page cached before the pass stays cached
            let mut sink = vec![0u8; size];
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut sink, 0).unwrap();
            let before = resident_pages(&file);
            let warm = run(&mut src, HashMode::Full, false);
            assert!(resident_pages(&file) >= before * 99 / 100);
            assert_eq!(cold.hashes.blake3.as_deref(), Some(want.as_str()));
            assert_eq!(warm.hashes.blake3, cold.hashes.blake3);
            assert_eq!(warm.components, cold.components);
            passes.push(cold);
        }
        // the same component hash whichever way the windows came in, and the one of the bytes in memory
        assert_eq!(passes[0].components, passes[1].components);
        let in_memory = run(
            &mut source(&mut MemorySource(&data), &t, &c),
            HashMode::Full,
            false,
        );
        assert_eq!(passes[0].components, in_memory.components);
        assert!(!in_memory.components.is_empty());
    }

    /// A full pass over one F32 tensor covering a 3 MiB file of ones, after `shrink` ran on the file.
    fn pass_after(shrink: impl FnOnce(&File)) -> DataPass {
        use std::io::Write;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&vec![1u8; 3 << 20]).unwrap();
        let file = f.reopen().unwrap();
        let mut fs = FileSource::new(&file, 3 << 20);
        shrink(f.as_file());
        let t = [tensor("x", Dtype::F32, &[3 << 18], 0)];
        let c = class(vec![vae(0)]);
        let mut src = Source {
            bytes: &mut fs,
            tensors: &t,
            class: &c,
            safetensors_metadata: None,
            stop: None,
        };
        run(&mut src, HashMode::Full, true)
    }

    #[test]
    fn file_shrinking_under_the_pass_is_a_finding() {
        let dp = pass_after(|f| f.set_len(1 << 20).unwrap());
        assert_eq!(dp.findings.len(), 1);
        assert_eq!(dp.findings[0].check, "file.truncated");
        assert_eq!(dp.findings[0].details["actual"], 1 << 20);
        assert!(dp.hashes.blake3.is_none() && dp.components.is_empty());
    }

    /// A local file whose source cuts it to `cut` bytes (if any) when the pass releases its first
    /// window: later windows, some already brought into memory, are then read past the file's end. A
    /// file read in one window (inline) is cut as soon as that window is brought in. Every window
    /// brought is logged.
    struct CutWhileRead<'a> {
        inner: FileSource<'a>,
        file: &'a File,
        cut: Option<u64>,
        brought: Vec<(u64, u64)>,
    }

    impl ChunkSource for CutWhileRead<'_> {
        fn len(&self) -> u64 {
            self.inner.len()
        }
        fn next_chunk(&mut self, off: u64, buf: &mut [u8]) -> std::io::Result<usize> {
            self.inner.next_chunk(off, buf)
        }
        fn read_at(&mut self, off: u64, buf: &mut [u8]) -> std::io::Result<usize> {
            self.inner.read_at(off, buf)
        }
        fn shrunk(&mut self) -> Option<u64> {
            self.inner.shrunk()
        }
        fn map(&self) -> Option<std::sync::Arc<crate::mapguard::GuardedMap>> {
            self.inner.map()
        }
        fn cached(&mut self, off: u64, len: u64) -> bool {
            self.inner.cached(off, len)
        }
        fn bring(&mut self, off: u64, len: u64) -> std::io::Result<u64> {
            self.brought.push((off, len));
            let brought = self.inner.bring(off, len);
            if let Some(cut) = self.cut.filter(|&cut| off == 0 && len > cut) {
                self.file.set_len(cut).unwrap();
            }
            brought
        }
        fn release(&mut self, off: u64, len: u64) {
            if let Some(cut) = self.cut.filter(|&cut| off == 0 && len <= cut) {
                self.file.set_len(cut).unwrap();
            }
            self.inner.release(off, len)
        }
    }

    #[test]
    fn a_file_cut_under_its_map_is_a_finding() {
        // read inline (up to INLINE_MAX), and by a reader thread running ahead
        for size in [4 * MAP_WINDOW, INLINE_MAX + 2 * MAP_WINDOW] {
            cut_under_its_map(size);
        }
    }

    fn cut_under_its_map(size: u64) {
        use std::io::Write;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&vec![1u8; size as usize]).unwrap();
        let file = f.reopen().unwrap();
        let t = [tensor("x", Dtype::F32, &[size / 4], 0)];
        let c = class(vec![vae(0)]);
        let cut = MAP_WINDOW + 4096;
        // windows populated in one call, and faulted in by touch (older kernels)
        for populate in [true, false] {
            f.as_file().set_len(size).unwrap();
            let inner = FileSource::new(&file, size);
            let mut cutting = CutWhileRead {
                inner: if populate { inner } else { inner.touching() },
                file: f.as_file(),
                cut: Some(cut),
                brought: Vec::new(),
            };
            let dp = run(&mut source(&mut cutting, &t, &c), HashMode::Full, false);
            assert!(dp.hashes.blake3.is_none() && dp.components.is_empty());
            assert_eq!(dp.findings.len(), 1, "populate: {populate}");
            assert_eq!(dp.findings[0].check, "file.truncated");
            assert_eq!(dp.findings[0].details["actual"], cut);
        }
    }

    #[test]
    fn cached_windows_are_long_and_read_ones_short() {
        use std::os::fd::AsRawFd;
        let size = (INLINE_MAX + WARM_WINDOW + 3 * MAP_WINDOW) as usize + 777;
        let (f, file, data) = period_file(size);
        let want = blake3::hash(&data).to_hex().to_string();
        let t = [tensor("x", Dtype::F32, &[(size / 4 - 100) as u64], 100)];
        let c = class(vec![vae(0)]);
        let pass = |evict: bool| {
            if evict {
                fadvise_dontneed(file.as_raw_fd(), 0, size as u64);
            }
            let mut logged = CutWhileRead {
                inner: FileSource::new(&file, size as u64),
                file: f.as_file(),
                cut: None,
                brought: Vec::new(),
            };
            let dp = run(&mut source(&mut logged, &t, &c), HashMode::Full, false);
            assert_eq!(dp.hashes.blake3.as_deref(), Some(want.as_str()));
            (dp.components, logged.brought)
        };
        let (warm, long) = pass(false);
        assert_eq!(long[0], (0, WARM_WINDOW));
        assert_eq!(long.iter().map(|w| w.1).sum::<u64>(), size as u64);
        let (cold, short) = pass(true);
        assert_eq!(warm, cold);
        if short.len() > long.len() {
            // evicted (not on tmpfs): windows of MAP_WINDOW bytes
            assert!(short.iter().all(|w| w.1 <= MAP_WINDOW));
        }
    }

    /// Bytes in memory whose reads end early after `cut` bytes, or fail there, without the length changing.
    struct Faulty<'a> {
        bytes: &'a [u8],
        cut: u64,
        fail: bool,
    }

    impl ChunkSource for Faulty<'_> {
        fn len(&self) -> u64 {
            self.bytes.len() as u64
        }
        fn next_chunk(&mut self, off: u64, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.fail && off + buf.len() as u64 > self.cut {
                return Err(std::io::Error::other("device gone"));
            }
            let n = buf.len().min(self.cut.saturating_sub(off) as usize);
            MemorySource(self.bytes).read_at(off, &mut buf[..n])
        }
        fn read_at(&mut self, off: u64, buf: &mut [u8]) -> std::io::Result<usize> {
            self.next_chunk(off, buf)
        }
        fn shrunk(&mut self) -> Option<u64> {
            None
        }
    }

    #[test]
    fn a_short_read_is_a_finding_and_a_failed_one_an_error() {
        let bytes = vec![1u8; READ_CHUNK as usize + 4096];
        let t = [tensor("x", Dtype::F32, &[bytes.len() as u64 / 4], 0)];
        let c = class(vec![vae(0)]);
        let cut = READ_CHUNK + 100;
        for fail in [false, true] {
            let mut src = Source {
                bytes: &mut Faulty {
                    bytes: &bytes,
                    cut,
                    fail,
                },
                tensors: &t,
                class: &c,
                safetensors_metadata: None,
                stop: None,
            };
            let dp = run(&mut src, HashMode::Full, false);
            assert!(dp.hashes.blake3.is_none() && dp.components.is_empty());
            if fail {
                assert!(dp.io_error.is_some() && dp.findings.is_empty());
            } else {
                assert_eq!(dp.findings[0].check, "file.truncated");
                assert_eq!(dp.findings[0].details["actual"], cut);
            }
        }
    }

    #[test]
    fn elements_straddling_chunks_are_counted_and_sampled_once() {
        // An F32 tensor starting 3 bytes in: elements straddle every chunk boundary. NaNs sit at the
        // elements around the first boundary and at both ends.
        let n = (2 * READ_CHUNK as usize + 4096) / 4;
        let mut v: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 / 8.0).collect();
        let at_boundary = (READ_CHUNK as usize - 3) / 4;
        // and around the ends of the component hash's units (the stream's data starts after the
        // 30 bytes of framing), where one thread's unit ends and another's begins
        let unit = |k: usize| (k * crate::component_hash::UNIT as usize - 30) / 4;
        let nan_at = [
            0,
            unit(1) - 1,
            unit(1),
            unit(2),
            unit(2) + 1,
            at_boundary - 1,
            at_boundary,
            at_boundary + 1,
            n - 1,
        ];
        for &i in &nan_at {
            v[i] = f32::NAN;
        }
        let data: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let mut shifted = vec![7u8; 3];
        shifted.extend_from_slice(&data);
        let c = class(vec![vae(0)]);
        let pass = |bytes: &[u8], start: u64| {
            let t = [tensor("w", Dtype::F32, &[n as u64], start)];
            let mut src = Source {
                bytes: &mut MemorySource(bytes),
                tensors: &t,
                class: &c,
                safetensors_metadata: None,
                stop: None,
            };
            run_with(&mut src, HashMode::Components, false, true)
        };
        let a = pass(&shifted, 3);
        let b = pass(&data, 0);
        // the same bytes read in place from a file's map
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, &shifted).unwrap();
        let file = f.reopen().unwrap();
        let t = [tensor("w", Dtype::F32, &[n as u64], 3)];
        let mut fs = FileSource::new(&file, shifted.len() as u64);
        let mapped = run_with(
            &mut source(&mut fs, &t, &c),
            HashMode::Components,
            false,
            true,
        );
        let details = |dp: &DataPass| {
            dp.findings
                .iter()
                .map(|f| f.details.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(details(&mapped), details(&a));
        assert_eq!(mapped.components, a.components);
        assert_eq!(mapped.fingerprint, a.fingerprint);
        assert_eq!(
            a.components["vae"],
            reference(&[("w", "F32", &[n as u64], data.clone())])
        );
        let nan = |dp: &DataPass| {
            dp.findings
                .iter()
                .find(|f| f.details.get("nan").is_some())
                .map(|f| f.details["nan"].clone())
        };
        assert_eq!(nan(&a), Some(json!(nan_at.len())));
        assert_eq!(nan(&b), Some(json!(nan_at.len())));
        assert_eq!(a.components, b.components);
        assert_eq!(a.fingerprint, b.fingerprint);
        // the samples are the tensor's values at the sampled indices, wherever the chunks cut it
        let d = a.fingerprint.unwrap().components["vae"].decode().unwrap();
        let idx = crate::fingerprint::sample_indices("w", n as u64);
        let got = &d.tensors[0].3;
        assert_eq!(got.len(), idx.len());
        for (g, &i) in got.iter().zip(&idx) {
            let w = v[i as usize] as f64;
            assert!(g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()));
        }
    }

    #[test]
    fn pooled_buffers_are_bounded_and_their_old_bytes_never_read() {
        // a pass over a file of ones leaves its buffers in the pool full of ones...
        let ones = vec![1u8; 2 * READ_CHUNK as usize + 100];
        let t1 = [tensor("x", Dtype::F32, &[ones.len() as u64 / 4], 0)];
        let c = class(vec![vae(0)]);
        let mut src = Source {
            bytes: &mut MemorySource(&ones),
            tensors: &t1,
            class: &c,
            safetensors_metadata: None,
            stop: None,
        };
        run(&mut src, HashMode::Full, false);
        // ...then shorter files of other bytes hash as themselves, inline and read ahead
        for len in [1000usize, READ_CHUNK as usize + 7] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let t = [tensor("x", Dtype::U8, &[len as u64], 0)];
            let mut src = Source {
                bytes: &mut MemorySource(&data),
                tensors: &t,
                class: &c,
                safetensors_metadata: None,
                stop: None,
            };
            let dp = run(&mut src, HashMode::Full, false);
            let want = blake3::hash(&data).to_hex().to_string();
            assert_eq!(dp.hashes.blake3.as_deref(), Some(want.as_str()));
        }
        // the pool never keeps more than its bound, however many buffers were out at once
        let out: Vec<Buf> = (0..pool_max() + 5).map(|_| Buf::take()).collect();
        assert!(out.iter().all(|b| b.0.len() == READ_CHUNK as usize));
        drop(out);
        assert!(POOL.lock().unwrap().len() <= pool_max());
    }

    #[test]
    fn a_stopped_pass_says_so_and_hashes_nothing() {
        let bytes = vec![0u8; 64];
        let t = [tensor("x", Dtype::F32, &[16], 0)];
        let c = class(vec![vae(0)]);
        let stop = AtomicBool::new(true);
        let mut src = Source {
            bytes: &mut MemorySource(&bytes),
            tensors: &t,
            class: &c,
            safetensors_metadata: None,
            stop: Some(&stop),
        };
        let dp = run(&mut src, HashMode::Full, false);
        assert!(dp.stopped && dp.hashes.blake3.is_none() && dp.components.is_empty());
        stop.store(false, Ordering::Relaxed);
        assert!(!run(&mut src, HashMode::Full, false).stopped);
    }
}
