//! Canonical component hash, version 1 (contract §5; contract in docs/component-hash.md).
//!
//! The hash is BLAKE3 over a *virtual stream*: the component's tensors sorted by canonical name, each
//! one framed (name, 0x00, dtype, 0x00, ndim, dims, data length) and followed by its data. The file is
//! read once, in file order, which is not canonical order; so every tensor's stretch of the stream
//! (its *segment*, whose offset is known up front) is hashed on its own into BLAKE3 subtree chaining
//! values at their stream offsets, and the subtrees are joined into the root at the end. Chunks that
//! straddle two segments are kept as raw bytes (at most 2 KiB per tensor) and hashed when joined.
//! Subtrees never cross a [`UNIT`] boundary of the stream, so a long stretch splits into independent
//! units hashed on every core ([`Segment::feed_par`]), each handed, still in the CPU cache, to
//! whatever else reads the same bytes (the value checks).

use crate::classify::{Classification, Role};
use crate::tensor::TensorInfo;
use blake3::hazmat::{
    merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};
use blake3::{Hasher, CHUNK_LEN};
use rayon::prelude::*;
use std::collections::BTreeMap;

const CHUNK: u64 = CHUNK_LEN as u64;
/// Longest subtree a segment hashes on its own (a power of two of chunks): small enough that a unit's
/// bytes stay in the core's L2 cache for the value checks that read them after the hash, large enough
/// that the SIMD hasher runs at full width and the per-unit overhead is lost in the noise.
pub const UNIT: u64 = 128 << 10;
/// Bytes a stream hashed in order ([`InOrder`]) hands BLAKE3 at a time, each run starting at a
/// multiple of it: 16 chunks, as many as the widest SIMD hasher hashes at once, so it runs full. Any
/// longer and more of each short tensor is copied into the stage (a stage of 64 chunks copied two
/// thirds of a LoRA's bytes, a fifth of a scan's CPU); any shorter and the hasher runs at half width
/// (user CPU of a scan of 100 LoRAs against this stage: 8 chunks +14%, 4 chunks +25%, 64 chunks +5%).
const STAGE: usize = 16 << 10;
/// Bytes of a tensor [`Plan::hash_whole`] hashes before handing them, still in the core's cache, to
/// whatever else reads them (the value checks).
const SIDE_PIECE: usize = 256 << 10;

/// The bytes version 1 feeds before a tensor's data.
pub fn framing(name: &str, dtype: &str, shape: &[u64], data_len: u64) -> Vec<u8> {
    let mut f = Vec::with_capacity(name.len() + dtype.len() + 2 + 8 * (shape.len() + 2));
    f.extend_from_slice(name.as_bytes());
    f.push(0);
    f.extend_from_slice(dtype.as_bytes());
    f.push(0);
    f.extend_from_slice(&(shape.len() as u64).to_le_bytes());
    for d in shape {
        f.extend_from_slice(&d.to_le_bytes());
    }
    f.extend_from_slice(&data_len.to_le_bytes());
    f
}

/// A finished BLAKE3 subtree of the stream: `len` bytes at `start`.
#[derive(Clone, Copy)]
struct Node {
    start: u64,
    len: u64,
    cv: ChainingValue,
}

impl Node {
    fn chunks(&self) -> u64 {
        self.len.div_ceil(CHUNK)
    }
}

/// One tensor's stretch `[start, end)` of a component stream, fed in order.
pub struct Segment {
    start: u64,
    end: u64,
    pos: u64,
    total: u64,
    /// The subtree being hashed when the bytes fed so far end inside it: (start, length, hasher). Boxed,
    /// so that a segment (moved to and from the threads for every chunk) stays small; a subtree whose
    /// bytes arrive in one call is hashed on the stack and never lands here.
    block: Option<Box<(u64, u64, Hasher)>>,
    nodes: Vec<Node>,
    /// Bytes of chunks this segment shares with a neighbour (or of a one-chunk stream).
    edges: Vec<(u64, Vec<u8>)>,
}

impl Segment {
    /// A segment at stream offset `start` that will hold `framing` then `data_len` data bytes.
    pub fn new(start: u64, framing: &[u8], data_len: u64, total: u64) -> Segment {
        let mut s = Segment {
            start,
            end: start + framing.len() as u64 + data_len,
            pos: start,
            total,
            block: None,
            nodes: Vec::new(),
            edges: Vec::new(),
        };
        s.feed(framing);
        s
    }

    /// Bytes still expected.
    pub fn remaining(&self) -> u64 {
        self.end - self.pos
    }

    /// Feeds the next bytes of the segment (never more than [`Segment::remaining`]).
    pub fn feed(&mut self, mut bytes: &[u8]) {
        debug_assert!(bytes.len() as u64 <= self.remaining());
        while !bytes.is_empty() {
            let p = self.pos;
            let chunk_start = p / CHUNK * CHUNK;
            let chunk_end = (chunk_start + CHUNK).min(self.total);
            let inside = self.total > CHUNK
                && chunk_end - chunk_start == CHUNK
                && chunk_start >= self.start
                && chunk_end <= self.end;
            let take;
            if !inside {
                take = bytes.len().min((chunk_end - p) as usize);
                match self.edges.last_mut() {
                    Some((at, b)) if *at + b.len() as u64 == p && *at / CHUNK == p / CHUNK => {
                        b.extend_from_slice(&bytes[..take])
                    }
                    _ => self.edges.push((p, bytes[..take].to_vec())),
                }
            } else {
                let limit = (self.end / CHUNK * CHUNK).min((p / UNIT + 1) * UNIT);
                let len = block_len(p, limit, self.total);
                if self.block.is_none() && len <= bytes.len() as u64 {
                    // The whole subtree is here: hashed at once, nothing kept between calls.
                    let mut h = Hasher::new();
                    h.set_input_offset(p);
                    h.update(&bytes[..len as usize]);
                    self.nodes.push(Node {
                        start: p,
                        len,
                        cv: h.finalize_non_root(),
                    });
                    self.pos += len;
                    bytes = &bytes[len as usize..];
                    continue;
                }
                let (bs, bl, h) = &mut **self.block.get_or_insert_with(|| {
                    let mut h = Hasher::new();
                    h.set_input_offset(p);
                    Box::new((p, len, h))
                });
                let (bs, bl) = (*bs, *bl);
                take = bytes.len().min((bs + bl - p) as usize);
                h.update(&bytes[..take]);
                if p + take as u64 == bs + bl {
                    let cv = h.finalize_non_root();
                    self.nodes.push(Node {
                        start: bs,
                        len: bl,
                        cv,
                    });
                    self.block = None;
                }
            }
            self.pos += take as u64;
            bytes = &bytes[take..];
        }
    }

    /// [`Segment::feed`], hashing the whole [`UNIT`]s of `bytes` in parallel. `side(from, to)` is called
    /// on every byte range of `bytes` once (in no particular order, on the thread that just hashed it,
    /// so the bytes are still cached); its results come back in `bytes` order.
    pub fn feed_par<R: Send>(
        &mut self,
        bytes: &[u8],
        side: impl Fn(usize, usize) -> R + Sync,
    ) -> Vec<R> {
        let p = self.pos;
        let end = p + bytes.len() as u64;
        // Whole units: UNIT-aligned, inside the segment's whole chunks and not the whole stream.
        let first = p.next_multiple_of(UNIT);
        let last = (end.min(self.end / CHUNK * CHUNK) / UNIT * UNIT).max(first);
        if UNIT >= self.total || last - first < 2 * UNIT {
            self.feed(bytes);
            return vec![side(0, bytes.len())];
        }
        let (a, b) = ((first - p) as usize, (last - p) as usize);
        let mut out = Vec::with_capacity((b - a) / UNIT as usize + 2);
        if a > 0 {
            self.feed(&bytes[..a]);
            out.push(side(0, a));
        }
        let units: Vec<(Node, R)> = bytes[a..b]
            .par_chunks(UNIT as usize)
            .enumerate()
            .map(|(k, unit)| {
                let start = first + k as u64 * UNIT;
                let mut h = Hasher::new();
                h.set_input_offset(start);
                h.update(unit);
                let node = Node {
                    start,
                    len: UNIT,
                    cv: h.finalize_non_root(),
                };
                let from = a + k * UNIT as usize;
                (node, side(from, from + unit.len()))
            })
            .collect();
        for (node, r) in units {
            self.nodes.push(node);
            out.push(r);
        }
        self.pos = last;
        if b < bytes.len() {
            self.feed(&bytes[b..]);
            out.push(side(b, bytes.len()));
        }
        out
    }
}

/// Longest aligned power-of-two run of chunks at `p` that ends by `limit` and is not the whole stream.
fn block_len(p: u64, limit: u64, total: u64) -> u64 {
    let mut len = CHUNK;
    while p.is_multiple_of(2 * len) && p + 2 * len <= limit && 2 * len < total {
        len *= 2;
    }
    len
}

/// A BLAKE3 stream fed in order at full SIMD width however short its pieces. BLAKE3 hashes many chunks
/// at once only within one call and from a stream offset aligned to their number; so short pieces are
/// copied into a stage until the stream reaches the next [`STAGE`] boundary, and the stage is hashed
/// there, while the whole stages of a long piece that starts on a boundary are hashed in place.
pub struct InOrder {
    h: Hasher,
    /// Always the stream's bytes since its last STAGE boundary.
    stage: Vec<u8>,
}

impl Default for InOrder {
    fn default() -> Self {
        InOrder {
            h: Hasher::new(),
            stage: Vec::with_capacity(STAGE),
        }
    }
}

impl InOrder {
    /// Feeds the next bytes of the stream.
    pub fn update(&mut self, mut p: &[u8]) {
        if !self.stage.is_empty() {
            let take = (STAGE - self.stage.len()).min(p.len());
            self.stage.extend_from_slice(&p[..take]);
            p = &p[take..];
            if self.stage.len() < STAGE {
                return;
            }
            self.h.update(&self.stage);
            self.stage.clear();
        }
        let whole = p.len() / STAGE * STAGE;
        self.h.update(&p[..whole]);
        self.stage.extend_from_slice(&p[whole..]);
    }

    /// The stream's hash.
    pub fn finalize(mut self) -> blake3::Hash {
        self.h.update(&self.stage);
        self.h.finalize()
    }
}

/// Joins the segments of one stream of `total` bytes into its BLAKE3 hash; `None` if bytes are missing.
pub fn finish(segments: &[&Segment], total: u64) -> Option<blake3::Hash> {
    if segments.iter().any(|s| s.remaining() != 0) {
        return None;
    }
    let mut edges: Vec<&(u64, Vec<u8>)> = segments.iter().flat_map(|s| s.edges.iter()).collect();
    edges.sort_by_key(|e| e.0);
    if total <= CHUNK {
        let mut all = Vec::with_capacity(total as usize);
        for (at, b) in edges {
            if *at != all.len() as u64 {
                return None;
            }
            all.extend_from_slice(b);
        }
        return (all.len() as u64 == total).then(|| blake3::hash(&all));
    }
    let mut nodes: Vec<Node> = segments
        .iter()
        .flat_map(|s| s.nodes.iter().copied())
        .collect();
    // Each chunk shared by segments, hashed from its pieces (on every core: a checkpoint has
    // thousands, one or two per tensor).
    let shared: Vec<&[&(u64, Vec<u8>)]> =
        edges.chunk_by(|a, b| a.0 / CHUNK == b.0 / CHUNK).collect();
    let joined: Option<Vec<Node>> = shared
        .par_iter()
        .map(|pieces| {
            let chunk_start = pieces[0].0 / CHUNK * CHUNK;
            let mut h = Hasher::new();
            h.set_input_offset(chunk_start);
            let mut at = chunk_start;
            for (piece_at, bytes) in pieces.iter().map(|e| (e.0, &e.1)) {
                if piece_at != at {
                    return None;
                }
                h.update(bytes);
                at += bytes.len() as u64;
            }
            (at == (chunk_start + CHUNK).min(total)).then(|| Node {
                start: chunk_start,
                len: at - chunk_start,
                cv: h.finalize_non_root(),
            })
        })
        .collect();
    nodes.extend(joined?);
    nodes.sort_by_key(|n| n.start);
    let mut stack: Vec<Node> = Vec::new();
    let mut expect = 0;
    for n in nodes {
        if n.start != expect {
            return None;
        }
        expect += n.len;
        stack.push(n);
        while stack.len() >= 2 {
            let (l, r) = (stack[stack.len() - 2], stack[stack.len() - 1]);
            let siblings =
                l.chunks() == r.chunks() && (l.start / CHUNK).is_multiple_of(2 * l.chunks());
            if !siblings || l.len + r.len >= total {
                break;
            }
            stack.truncate(stack.len() - 2);
            stack.push(Node {
                start: l.start,
                len: l.len + r.len,
                cv: merge_subtrees_non_root(&l.cv, &r.cv, Mode::Hash),
            });
        }
    }
    if expect != total || stack.len() < 2 {
        return None;
    }
    while stack.len() > 2 {
        let r = stack.pop()?;
        let l = stack.pop()?;
        stack.push(Node {
            start: l.start,
            len: l.len + r.len,
            cv: merge_subtrees_non_root(&l.cv, &r.cv, Mode::Hash),
        });
    }
    Some(merge_subtrees_root(&stack[0].cv, &stack[1].cv, Mode::Hash))
}

/// Where one tensor sits in the component streams.
pub struct Member {
    pub segment: Segment,
}

/// A component's stream laid out: its tensors in canonical order, each with its framing.
struct Stream {
    name: &'static str,
    total: u64,
    /// (tensor, framing) in canonical order.
    order: Vec<(usize, Vec<u8>)>,
    /// Its hash when computed in one go ([`Plan::hash_whole`]) instead of from segments.
    whole: Option<blake3::Hash>,
}

/// The component streams of one file: which tensors each holds, in canonical order.
pub struct Plan {
    streams: Vec<Stream>,
    /// Per tensor: its component and segment (`None` for buffers, EMA, junk).
    pub members: Vec<Option<Member>>,
}

impl Plan {
    /// Lays out every component's stream (contract §5: component tensors only, sorted by canonical name).
    pub fn new(tensors: &[TensorInfo], class: &Classification) -> Plan {
        let mut by_comp: BTreeMap<&'static str, Vec<(&str, usize)>> = BTreeMap::new();
        for (i, (t, role)) in tensors.iter().zip(&class.roles).enumerate() {
            if let Role::Component { name, prefix_len } = role {
                let canonical = t.name.get(*prefix_len..).unwrap_or(&t.name);
                by_comp.entry(name).or_default().push((canonical, i));
            }
        }
        let mut plan = Plan {
            streams: Vec::new(),
            members: (0..tensors.len()).map(|_| None).collect(),
        };
        for (name, mut list) in by_comp {
            list.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            let order: Vec<(usize, Vec<u8>)> = list
                .iter()
                .map(|&(canon, i)| {
                    let t = &tensors[i];
                    (i, framing(canon, t.dtype.name(), &t.shape, t.len))
                })
                .collect();
            let total: u64 = order
                .iter()
                .map(|(i, f)| f.len() as u64 + tensors[*i].len)
                .sum();
            let mut at = 0;
            for (i, f) in &order {
                plan.members[*i] = Some(Member {
                    segment: Segment::new(at, f, tensors[*i].len, total),
                });
                at += f.len() as u64 + tensors[*i].len;
            }
            plan.streams.push(Stream {
                name,
                total,
                order,
                whole: None,
            });
        }
        plan
    }

    /// Hashes, each in one go, the streams whose tensors are all contiguous bytes of `file` (a file's
    /// bytes from offset 0, all in memory), instead of segment by segment as the file's bytes go by:
    /// the short tensors of a small file (a LoRA's, an embedding's) would otherwise be hashed a chunk at
    /// a time, with no SIMD across chunks. Their segments are dropped, so nothing feeds them after.
    /// `contiguous(i)` says whether tensor `i`'s data is its bytes `[start, end)` in C order.
    /// `side(i, a, b)` is called on every file range `[a, b)` of the hashed tensors' data once, right
    /// after it was hashed (the bytes still cached); its results come back with their tensor.
    pub fn hash_whole<R: Send>(
        &mut self,
        tensors: &[TensorInfo],
        file: &[u8],
        contiguous: impl Fn(usize) -> bool + Sync,
        side: impl Fn(usize, u64, u64) -> R + Sync,
    ) -> Vec<(usize, R)> {
        let bytes = |i: usize| {
            let t = &tensors[i];
            let end = usize::try_from(t.end()).ok().filter(|&e| e <= file.len())?;
            contiguous(i).then(|| &file[t.start as usize..end])
        };
        let out: Vec<(usize, R)> = self
            .streams
            .par_iter_mut()
            .flat_map_iter(|s| {
                let data: Option<Vec<&[u8]>> = s.order.iter().map(|(i, _)| bytes(*i)).collect();
                let mut seen = Vec::new();
                if let Some(data) = data {
                    let mut h = InOrder::default();
                    for ((i, f), d) in s.order.iter().zip(data) {
                        h.update(f);
                        let start = tensors[*i].start;
                        for (k, piece) in d.chunks(SIDE_PIECE).enumerate() {
                            h.update(piece);
                            let a = start + (k * SIDE_PIECE) as u64;
                            seen.push((*i, side(*i, a, a + piece.len() as u64)));
                        }
                    }
                    s.whole = Some(h.finalize());
                }
                seen
            })
            .collect();
        for s in &self.streams {
            if s.whole.is_some() {
                for (i, _) in &s.order {
                    self.members[*i] = None;
                }
            }
        }
        out
    }

    /// Each component's hash (lowercase hex); components with missing bytes are left out.
    pub fn finish(&self) -> BTreeMap<String, String> {
        let hashes: Vec<(&str, Option<blake3::Hash>)> = self
            .streams
            .par_iter()
            .map(|s| {
                let hash = s.whole.or_else(|| {
                    let segs: Option<Vec<&Segment>> = s
                        .order
                        .iter()
                        .map(|(i, _)| self.members[*i].as_ref().map(|m| &m.segment))
                        .collect();
                    segs.and_then(|segs| finish(&segs, s.total))
                });
                (s.name, hash)
            })
            .collect();
        hashes
            .into_iter()
            .filter_map(|(name, h)| Some((name.to_string(), h?.to_hex().to_string())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random bytes (xorshift), so tests need no extra crate.
    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// Splits `stream` at `cuts` into segments, feeds them in `order` in pieces of `piece` bytes.
    fn hash_split(stream: &[u8], cuts: &[usize], order: &[usize], piece: usize) -> blake3::Hash {
        let total = stream.len() as u64;
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(stream.len());
        let mut segs: Vec<Segment> = bounds
            .windows(2)
            .map(|w| Segment::new(w[0] as u64, &[], (w[1] - w[0]) as u64, total))
            .collect();
        for &k in order {
            let part = &stream[bounds[k]..bounds[k + 1]];
            for p in part.chunks(piece.max(1)) {
                segs[k].feed(p);
            }
        }
        let refs: Vec<&Segment> = segs.iter().collect();
        finish(&refs, total).expect("complete")
    }

    #[test]
    fn split_streams_hash_like_one_stream() {
        let lens = [
            1usize,
            1023,
            1024,
            1025,
            2047,
            2048,
            2049,
            3072,
            4096,
            5000,
            8192,
            70_000,
            1 << 20,
        ];
        for (n, &len) in lens.iter().enumerate() {
            let data = bytes(len, n as u64 + 7);
            let want = blake3::hash(&data);
            let mut cuts: Vec<usize> = bytes(6, len as u64)
                .iter()
                .map(|b| (*b as usize * len) / 256)
                .filter(|&c| c > 0 && c < len)
                .collect();
            cuts.sort();
            cuts.dedup();
            let k = cuts.len() + 1;
            let fwd: Vec<usize> = (0..k).collect();
            let rev: Vec<usize> = (0..k).rev().collect();
            for piece in [1, 700, 4096, 1 << 20] {
                assert_eq!(hash_split(&data, &cuts, &fwd, piece), want, "len {len}");
                assert_eq!(hash_split(&data, &cuts, &rev, piece), want, "len {len}");
            }
            // chunk-aligned cuts as well
            let aligned: Vec<usize> = (1..len / 1024).map(|c| c * 1024).collect();
            let order: Vec<usize> = (0..=aligned.len()).rev().collect();
            assert_eq!(hash_split(&data, &aligned, &order, 3000), want);
        }
    }

    #[test]
    fn units_hashed_in_parallel_hash_like_one_stream() {
        // streams of a few units and unaligned cuts: segments fed by feed_par in pieces that start
        // anywhere, mixed with plain feeds; `side` sees every byte of each piece exactly once
        let u = UNIT as usize;
        for (n, len) in [3 * u + 5000, 8 * u, 2 * u + 1, 5 * u - 1]
            .into_iter()
            .enumerate()
        {
            let data = bytes(len, n as u64 + 99);
            let want = blake3::hash(&data);
            let cuts = [777, u + 3, 2 * u + 1024, len - 10];
            for piece in [1000, u - 1, 2 * u + 17, 3 * u, len] {
                let total = len as u64;
                let mut bounds = vec![0];
                bounds.extend(cuts.iter().copied().filter(|&c| c < len));
                bounds.push(len);
                let mut segs: Vec<Segment> = bounds
                    .windows(2)
                    .map(|w| Segment::new(w[0] as u64, &[], (w[1] - w[0]) as u64, total))
                    .collect();
                for k in (0..segs.len()).rev() {
                    let part = &data[bounds[k]..bounds[k + 1]];
                    for (j, p) in part.chunks(piece).enumerate() {
                        if j % 3 == 2 {
                            segs[k].feed(p);
                            continue;
                        }
                        let seen = segs[k].feed_par(p, |a, b| (a, b, p[a..b].to_vec()));
                        let mut at = 0;
                        for (a, b, copy) in seen {
                            assert_eq!((a, &copy[..]), (at, &p[a..b]));
                            at = b;
                        }
                        assert_eq!(at, p.len());
                    }
                }
                let refs: Vec<&Segment> = segs.iter().collect();
                assert_eq!(finish(&refs, total), Some(want), "len {len} piece {piece}");
            }
        }
    }

    /// BLAKE3 of the concatenation of `pieces`, hashed as an [`InOrder`] stream.
    fn hash_in_order<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> blake3::Hash {
        let mut h = InOrder::default();
        for p in pieces {
            h.update(p);
        }
        h.finalize()
    }
    #[test]
    fn pieces_hashed_in_order_hash_like_one_stream() {
        let (u, m) = (STAGE, 1 << 20);
        for (n, len) in [0, 1, 1024, 1025, u - 1, u, u + 1, 3 * m + 123]
            .into_iter()
            .enumerate()
        {
            let data = bytes(len, n as u64 + 3);
            let want = blake3::hash(&data);
            let cut_sets = [
                vec![],
                vec![1, 2, 3],
                vec![100, u + 4464, u + 4465],
                vec![u, 2 * u + 5, m + u, 2 * m + 3],
            ];
            for cuts in cut_sets {
                let mut bounds = vec![0];
                bounds.extend(cuts.into_iter().filter(|&c| c < len));
                bounds.push(len);
                let pieces = bounds.windows(2).map(|w| &data[w[0]..w[1]]);
                assert_eq!(hash_in_order(pieces), want, "len {len}");
            }
            for piece in [1, 977, u + 1] {
                assert_eq!(hash_in_order(data.chunks(piece)), want, "len {len}");
            }
        }
    }

    #[test]
    fn missing_bytes_give_no_hash() {
        let total = 5000;
        let mut s = Segment::new(0, &[], total, total);
        s.feed(&bytes(4000, 1));
        assert!(finish(&[&s], total).is_none());
    }

    /// The small vectors of docs/component-hash.md (computed there by a Python implementation).
    #[test]
    fn doc_vectors() {
        use crate::dtype::Dtype;
        let t = |name: &str, dtype, shape: &[u64], start, len| TensorInfo {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
            start,
            len,
            strides: None,
        };
        let vae = Role::Component {
            name: "vae",
            prefix_len: 0,
        };
        let class = |n| Classification {
            kind: crate::kind::Kind::Vae,
            arch: crate::kind::Arch::Sd1,
            roles: vec![vae.clone(); n],
            expected_text_encoders: vec![],
            identification: None,
            incomplete: vec![],
        };
        let hash = |tensors: &[TensorInfo], data: &[u8]| {
            let mut plan = Plan::new(tensors, &class(tensors.len()));
            for (i, t) in tensors.iter().enumerate() {
                let m = plan.members[i].as_mut().unwrap();
                m.segment
                    .feed(&data[t.start as usize..(t.start + t.len) as usize]);
            }
            let fed = plan.finish()["vae"].clone();
            // the same stream hashed in one go from the file's bytes
            let mut whole = Plan::new(tensors, &class(tensors.len()));
            let seen = whole.hash_whole(tensors, data, |_| true, |i, a, b| (i, a, b));
            assert!(whole.members.iter().all(|m| m.is_none()));
            // every data byte handed on once, after its tensor's framing
            let mut seen: Vec<(u64, u64)> = seen.into_iter().map(|(_, (_, a, b))| (a, b)).collect();
            seen.sort();
            let mut ranges: Vec<(u64, u64)> = tensors.iter().map(|t| (t.start, t.end())).collect();
            ranges.sort();
            assert_eq!(seen, ranges);
            assert_eq!(whole.finish()["vae"], fed);
            // a tensor past the end of the bytes: no hash in one go, the segments stay to be fed
            let mut short = Plan::new(tensors, &class(tensors.len()));
            let seen = short.hash_whole(tensors, &data[..data.len() - 1], |_| true, |_, _, _| ());
            assert!(seen.is_empty());
            assert!(short.members.iter().all(|m| m.is_some()));
            assert!(short.finish().is_empty());
            fed
        };
        assert_eq!(
            hash(&[t("a", Dtype::U8, &[4], 0, 4)], &[0, 1, 2, 3]),
            "46b97d1fed2ea2ba18ce3c721e5103d4de1432d96a0b08fdfa5310cf88882fab"
        );
        let mut data: Vec<u8> = (0..8).collect();
        data.extend_from_slice(&1.0f32.to_le_bytes());
        assert_eq!(
            hash(
                &[
                    t("w", Dtype::F16, &[2, 2], 0, 8),
                    t("b", Dtype::F32, &[], 8, 4)
                ],
                &data
            ),
            "f47e986c78a8d0588564f1ba67702b531b9987f02fbc12004f024669992c6f22"
        );
    }

    #[test]
    fn framing_layout() {
        let f = framing("a.b", "F16", &[2, 3], 12);
        let mut want = b"a.b\0F16\0".to_vec();
        for v in [2u64, 2, 3, 12] {
            want.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(f, want);
    }
}
