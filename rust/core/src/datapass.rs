//! The one pass over a file's bytes that feeds every hasher and value check (SPEC §5).
//!
//! One reader walks the mapped file in large chunks, in order. Each chunk goes to every consumer at
//! once: the whole-file hashers ([`crate::hashes`]), the component hash segments of the tensors in it
//! ([`crate::component_hash`]), the NaN/Inf counters ([`crate::values`]) and, when asked, the lineage
//! fingerprint samplers ([`crate::fingerprint`]). Behind the reader, pages
//! are unmapped and, when the pass brought them in, dropped from the page cache, so a TB scan neither
//! grows resident memory nor evicts the cache.

use crate::classify::Classification;
use crate::component_hash::{Member, Plan};
use crate::fingerprint;
use crate::hashes::{self, FileHashers};
use crate::mapguard::GuardedMap;
use crate::report::{Finding, Hashes, Severity};
use crate::tensor::TensorInfo;
use crate::values::{self, Counts, Same};
use rayon::prelude::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
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
    /// The lineage fingerprint, when asked for ([`run_with`]).
    pub fingerprint: Option<crate::fingerprint::Fingerprint>,
}

/// The bytes the pass reads.
#[derive(Clone, Copy)]
pub enum Bytes<'a> {
    /// A read-only map of the whole of `file`: pages are dropped behind the reader.
    Mapped { map: &'a GuardedMap, file: &'a File },
    /// Bytes in memory (tests, small inputs).
    Memory(&'a [u8]),
}

impl Bytes<'_> {
    fn slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped { map, .. } => &map[..],
            Bytes::Memory(b) => b,
        }
    }
}

/// Everything the pass reads: the bytes and what the header said about them.
pub struct Source<'a> {
    pub bytes: Bytes<'a>,
    pub tensors: &'a [TensorInfo],
    pub class: &'a Classification,
    /// The `__metadata__` of a safetensors file (`None` for other formats: no addnet hash).
    pub safetensors_metadata: Option<&'a BTreeMap<String, Value>>,
    /// Set by another thread to abandon the pass (checked between chunks): the result is then partial.
    pub stop: Option<&'a AtomicBool>,
}

/// Bytes the reader hands to the consumers at a time (small enough to stay in the CPU cache while
/// every consumer reads them, and to bound the mapped pages resident per file).
const READ_CHUNK: u64 = 8 << 20;
/// How far ahead page residency is noted, in chunks: beyond the kernel's read-ahead window.
/// (Explicit MADV_WILLNEED was tried: it made cold reads slower, submitting I/O in the reader's path.)
const NOTE_AHEAD: u64 = 4;
/// Tensor pieces at least this long are counted on several threads.
const PAR_PIECE: usize = 1 << 20;

/// Reads the file once and feeds hashers and value checks.
pub fn run(src: &Source, mode: HashMode, sha256: bool) -> DataPass {
    run_with(src, mode, sha256, false)
}

/// [`run`], also sampling the lineage fingerprint when `fingerprint` is set (and `mode` reads data).
pub fn run_with(src: &Source, mode: HashMode, sha256: bool, fingerprint: bool) -> DataPass {
    let mut out = DataPass::default();
    if mode == HashMode::None {
        return out;
    }
    let data = src.bytes.slice();
    let size = data.len() as u64;
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
    let addnet_from = src
        .safetensors_metadata
        .and_then(|_| hashes::addnet_start(data, size));
    let mut file_h = (mode == HashMode::Full).then(|| FileHashers::new(size, sha256, addnet_from));
    let mut reader = Reader::new(src.bytes);

    let mut next = 0;
    let mut next_strided = 0;
    let mut active: Vec<usize> = Vec::new();
    let mut c0 = 0;
    while c0 < size {
        let c1 = (c0 + READ_CHUNK).min(size);
        if src.stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            out.stopped = true;
            return out;
        }
        if let Some(now) = reader.shrunk(size) {
            // Touching the map past the new end would fault (into zeros, see mapguard): stop early.
            return shrank(out, size, now);
        }
        reader.arrive(c1, size);
        while next < contiguous.len() && tensors[contiguous[next]].start < c1 {
            active.push(contiguous[next]);
            next += 1;
        }
        // Each job owns its tensor's segment while the chunk is processed.
        let jobs: Vec<(usize, Option<Member>)> = active
            .iter()
            .map(|&i| (i, plan.members[i].take()))
            .collect();
        let chunk = &data[c0 as usize..c1 as usize];
        let (_, done) = rayon::join(
            || {
                if let Some(h) = file_h.as_mut() {
                    h.feed(chunk);
                }
            },
            || {
                jobs.into_par_iter()
                    .map(|(i, mut m)| {
                        let seg = m.as_mut().map(|m| &mut m.segment);
                        let (c, s) = contiguous_piece(data, &tensors[i], seg, c0, c1);
                        (i, m, c, s)
                    })
                    .collect::<Vec<_>>()
            },
        );
        for (i, m, c, s) in done {
            plan.members[i] = m;
            counts[i] += c;
            same[i] = same[i].merge(s);
        }
        if let Some(p) = prints.as_mut() {
            for &i in &active {
                p.contiguous(i, data, &tensors[i], c0, c1);
            }
        }
        active.retain(|&i| tensors[i].end() > c1);
        while next_strided < strided.len() && span(&tensors[strided[next_strided]]).1 <= c1 {
            let i = strided[next_strided];
            let seg = plan.members[i].as_mut().map(|m| &mut m.segment);
            let (c, s) = strided_tensor(data, &tensors[i], seg);
            counts[i] += c;
            same[i] = s;
            if let (Some(p), Some((_, strides))) = (prints.as_mut(), gather_layout(&tensors[i])) {
                p.strided(i, data, &tensors[i], strides);
            }
            next_strided += 1;
        }
        // Keep pages a pending strided tensor will still gather from.
        let keep_from = strided[next_strided..]
            .iter()
            .map(|&i| span(&tensors[i]).0)
            .min()
            .unwrap_or(u64::MAX);
        reader.release(c1.min(keep_from), size);
        c0 = c1;
    }

    if reader.faulted() {
        // The file shrank between two checks: what was read past its new end was zeros, not data.
        let now = reader.current_len();
        return shrank(out, size, now);
    }
    if let Some(h) = file_h {
        out.hashes = h.finish();
        if let Some(meta) = src.safetensors_metadata {
            out.findings
                .extend(hashes::addnet_mismatch(meta, out.hashes.addnet.as_deref()));
        }
    }
    out.components = plan.finish();
    out.findings.extend(values::finding(tensors, &counts));
    out.findings
        .extend(values::constant_finding(tensors, &src.class.roles, &same));
    out.fingerprint = prints.map(|p| p.finish(tensors));
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
            let (c, s) = contiguous_piece(pieces[i], &alone, seg, 0, alone.len);
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

/// Feeds the part `[c0, c1)` of a contiguous tensor to its segment, counts its NaN/Inf and notes
/// whether its elements are all one value.
fn contiguous_piece(
    data: &[u8],
    t: &TensorInfo,
    seg: Option<&mut crate::component_hash::Segment>,
    c0: u64,
    c1: u64,
) -> (Counts, Same) {
    let (lo, hi) = (t.start.max(c0), t.end().min(c1));
    let feed = || {
        if let Some(s) = seg {
            s.feed(&data[lo as usize..hi as usize]);
        }
    };
    let count = || match values::element_size(t.dtype) {
        // Each element is counted in the chunk holding its first byte.
        Some(es) => {
            let es = es as u64;
            let first = t.start + (lo - t.start).div_ceil(es) * es;
            let last = (t.start + (hi - t.start).div_ceil(es) * es).min(t.end());
            let bytes = &data[first as usize..last.max(first) as usize];
            let both = |b: &[u8]| (values::count(t.dtype, b), values::sameness(t.dtype, b));
            if bytes.len() >= 2 * PAR_PIECE {
                bytes.par_chunks(PAR_PIECE).map(both).reduce(
                    || (Counts::default(), Same::Empty),
                    |mut a, b| {
                        a.0 += b.0;
                        (a.0, a.1.merge(b.1))
                    },
                )
            } else {
                both(bytes)
            }
        }
        None => (Counts::default(), Same::Empty),
    };
    rayon::join(feed, count).1
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

fn is_c_contiguous(shape: &[u64], strides: &[u64]) -> bool {
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
            s.feed(buf);
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

/// Walks a mapped file: asks for the next chunk ahead, and drops pages behind.
struct Reader<'a> {
    bytes: Bytes<'a>,
    page: u64,
    released: u64,
    noted: u64,
    /// Page residency (mincore) of chunks before the pass touched them, not yet released.
    resident: VecDeque<(u64, Vec<u8>)>,
}

impl<'a> Reader<'a> {
    fn new(bytes: Bytes<'a>) -> Self {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
        if let Bytes::Mapped { map, .. } = bytes {
            let _ = map.map().advise(memmap2::Advice::Sequential);
        }
        Reader {
            bytes,
            page,
            released: 0,
            noted: 0,
            resident: VecDeque::new(),
        }
    }

    /// The file's current length if it is now shorter than the `size` bytes mapped.
    fn shrunk(&self, size: u64) -> Option<u64> {
        let Bytes::Mapped { .. } = self.bytes else {
            return None;
        };
        let now = self.current_len();
        (now < size).then_some(now)
    }

    /// The file's length now (0 when it cannot be read; the length of the bytes in memory).
    fn current_len(&self) -> u64 {
        match self.bytes {
            Bytes::Mapped { file, .. } => file.metadata().map(|m| m.len()).unwrap_or(0),
            Bytes::Memory(b) => b.len() as u64,
        }
    }

    /// True when a read faulted past the file's end (the map read zeros there).
    fn faulted(&self) -> bool {
        matches!(self.bytes, Bytes::Mapped { map, .. } if map.faulted())
    }

    /// Notes which pages up to `NOTE_AHEAD` chunks past `c1` are cached already, before this pass's
    /// reads or the kernel's read-ahead (sequential advice) bring them in.
    fn arrive(&mut self, c1: u64, size: u64) {
        self.note((c1 + NOTE_AHEAD * READ_CHUNK).min(size));
    }

    /// Records page residency (mincore) from where the last record ended up to `to`.
    fn note(&mut self, to: u64) {
        let Bytes::Mapped { map, .. } = self.bytes else {
            return;
        };
        let from = self.noted;
        if to <= from {
            return;
        }
        let pages = (to - from).div_ceil(self.page) as usize;
        let mut vec = vec![0u8; pages];
        // SAFETY: [from, to) lies inside the live map, `from` is page aligned (a multiple of
        // READ_CHUNK) and `vec` has one byte per page of the range.
        let rc = unsafe {
            libc::mincore(
                map.as_ptr().add(from as usize) as *mut libc::c_void,
                (to - from) as usize,
                vec.as_mut_ptr(),
            )
        };
        if rc != 0 {
            vec.fill(0);
        }
        self.resident.push_back((from, vec));
        self.noted = to;
    }

    /// Unmaps pages before `upto` and drops from the page cache those the pass brought in.
    fn release(&mut self, upto: u64, size: u64) {
        let Bytes::Mapped { map, file } = self.bytes else {
            return;
        };
        let upto = if upto >= size {
            size
        } else {
            upto / self.page * self.page
        };
        if upto <= self.released {
            return;
        }
        let (from, len) = (self.released, upto - self.released);
        // SAFETY: the map is read-only and file-backed; after MADV_DONTNEED a later access faults the
        // page back in from the file, and no slice of [from, upto) is used again by this pass except
        // through the map itself.
        let _ = unsafe {
            map.map().unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                from as usize,
                len as usize,
            )
        };
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        let mut run: Option<u64> = None;
        let mut p = from;
        while p < upto {
            let cached = self.was_resident(p);
            match (cached, run) {
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
            fadvise_dontneed(fd, s, upto - s);
        }
        self.released = upto;
        while let Some((c, v)) = self.resident.front() {
            if c + v.len() as u64 * self.page <= upto {
                self.resident.pop_front();
            } else {
                break;
            }
        }
    }

    fn was_resident(&self, off: u64) -> bool {
        self.resident
            .iter()
            .find(|(c, v)| off >= *c && off < c + v.len() as u64 * self.page)
            .is_some_and(|(c, v)| v[((off - c) / self.page) as usize] & 1 == 1)
    }
}

fn fadvise_dontneed(fd: i32, off: u64, len: u64) {
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
    use crate::classify::Role;
    use crate::dtype::Dtype;

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
            kind: "vae",
            arch: "sd1",
            roles,
            expected_text_encoders: vec![],
            identification: None,
            incomplete: vec![],
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
            let src = Source {
                bytes: Bytes::Memory(bytes),
                tensors: t,
                class: c,
                safetensors_metadata: None,
                stop: None,
            };
            run(&src, HashMode::Components, false).components["vae"].clone()
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
        let src = Source {
            bytes: Bytes::Memory(&stored),
            tensors: std::slice::from_ref(&t),
            class: &c,
            safetensors_metadata: None,
            stop: None,
        };
        let got = run(&src, HashMode::Components, false).components["vae"].clone();
        assert_eq!(got, reference(&[("w", "F32", &[3, 4], c_order)]));
        assert_eq!(span(&t), (8, 8 + 48));
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
            let src = Source {
                bytes: Bytes::Memory(bytes),
                tensors: std::slice::from_ref(t),
                class: &cl,
                safetensors_metadata: None,
                stop: None,
            };
            run_with(&src, HashMode::Components, false, true)
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
            &Source {
                bytes: Bytes::Memory(&c32),
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
        let src = Source {
            bytes: Bytes::Memory(&bytes),
            tensors: &t,
            class: &c,
            safetensors_metadata: None,
            stop: None,
        };
        let dp = run(&src, HashMode::Full, true);
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
        let src = Source {
            bytes: Bytes::Memory(&bytes),
            tensors: &t,
            class: &c,
            safetensors_metadata: None,
            stop: None,
        };
        let dp = run(&src, HashMode::None, true);
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

    #[test]
    fn drops_the_pages_it_read_and_keeps_cached_ones() {
        use std::io::{Read, Write};
        use std::os::fd::AsRawFd;
        let size = 2 * READ_CHUNK as usize + 12345;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let block: Vec<u8> = (0..1 << 20).map(|i| (i * 31 % 251) as u8).collect();
        while f.as_file().metadata().unwrap().len() < size as u64 {
            f.write_all(&block).unwrap();
        }
        f.as_file().set_len(size as u64).unwrap();
        f.as_file().sync_all().unwrap();
        let file = f.reopen().unwrap();
        let pages = size.div_ceil(4096);
        fadvise_dontneed(file.as_raw_fd(), 0, size as u64);
        if resident_pages(&file) > pages / 10 {
            return; // this file system does not evict on request (tmpfs): nothing to observe
        }
        let t = [tensor("x", Dtype::F32, &[(size / 4 - 100) as u64], 100)];
        let c = class(vec![vae(0)]);
        let map = GuardedMap::new(&file, file.metadata().unwrap().len()).unwrap();
        let src = Source {
            bytes: Bytes::Mapped {
                map: &map,
                file: &file,
            },
            tensors: &t,
            class: &c,
            safetensors_metadata: None,
            stop: None,
        };
        let cold = run(&src, HashMode::Full, false);
        assert!(
            resident_pages(&file) < pages / 10,
            "cold pass left its pages cached"
        );
        // warm: every page cached before the pass stays cached
        let mut sink = Vec::new();
        file.try_clone().unwrap().read_to_end(&mut sink).unwrap();
        let before = resident_pages(&file);
        let warm = run(&src, HashMode::Full, false);
        assert!(resident_pages(&file) >= before * 99 / 100);
        let want = blake3::hash(&sink).to_hex().to_string();
        assert_eq!(cold.hashes.blake3.as_deref(), Some(want.as_str()));
        assert_eq!(warm.hashes.blake3, cold.hashes.blake3);
        assert_eq!(warm.components, cold.components);
    }
    /// A 3 MiB file of ones and its guarded map; then `shrink` runs, then a full pass over one F32
    /// tensor covering the file.
    fn pass_after(shrink: impl FnOnce(&File, &GuardedMap)) -> DataPass {
        use std::io::Write;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&vec![1u8; 3 << 20]).unwrap();
        let file = f.reopen().unwrap();
        let map = GuardedMap::new(&file, 3 << 20).unwrap();
        shrink(f.as_file(), &map);
        let t = [tensor("x", Dtype::F32, &[3 << 18], 0)];
        let c = class(vec![vae(0)]);
        let src = Source {
            bytes: Bytes::Mapped {
                map: &map,
                file: &file,
            },
            tensors: &t,
            class: &c,
            safetensors_metadata: None,
            stop: None,
        };
        run(&src, HashMode::Full, true)
    }

    #[test]
    fn file_shrinking_under_the_map_is_a_finding_not_a_fault() {
        let dp = pass_after(|f, _| f.set_len(1 << 20).unwrap());
        assert_eq!(dp.findings.len(), 1);
        assert_eq!(dp.findings[0].check, "file.truncated");
        assert_eq!(dp.findings[0].details["actual"], 1 << 20);
        assert!(dp.hashes.blake3.is_none() && dp.components.is_empty());
    }

    #[test]
    fn a_fault_past_the_end_between_checks_is_a_finding() {
        // Shrink, read past the end (zeros, flagged), grow back: the length checks see nothing wrong.
        let dp = pass_after(|f, map| {
            f.set_len(1 << 20).unwrap();
            // SAFETY: the offset is inside the map's length.
            let b = unsafe { std::ptr::read_volatile(map.as_ptr().add(2 << 20)) };
            assert_eq!(b, 0);
            f.set_len(3 << 20).unwrap();
        });
        assert_eq!(dp.findings.len(), 1, "{:?}", dp.findings);
        assert_eq!(dp.findings[0].check, "file.truncated");
        assert!(dp.hashes.blake3.is_none() && dp.components.is_empty());
    }

    #[test]
    fn a_stopped_pass_says_so_and_hashes_nothing() {
        let bytes = vec![0u8; 64];
        let t = [tensor("x", Dtype::F32, &[16], 0)];
        let c = class(vec![vae(0)]);
        let stop = AtomicBool::new(true);
        let src = Source {
            bytes: Bytes::Memory(&bytes),
            tensors: &t,
            class: &c,
            safetensors_metadata: None,
            stop: Some(&stop),
        };
        let dp = run(&src, HashMode::Full, false);
        assert!(dp.stopped && dp.hashes.blake3.is_none() && dp.components.is_empty());
        stop.store(false, Ordering::Relaxed);
        assert!(!run(&src, HashMode::Full, false).stopped);
    }
}
