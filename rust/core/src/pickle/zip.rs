//! A zip reader at least as lenient as PyTorch's (miniz): encryption flag bits, CRCs and local-header
//! names are ignored; entries are named by the central directory and their data found through the local
//! header's lengths. Zip64 is read. Without a usable central directory the local headers are walked.

use miniz_oxide::inflate::stream::{inflate, InflateState};
use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus};
use std::borrow::Cow;
use std::io::Read;

const LOCAL_SIG: &[u8] = b"PK\x03\x04";
const CENTRAL_SIG: &[u8] = b"PK\x01\x02";
const EOCD_SIG: &[u8] = b"PK\x05\x06";
const ZIP64_LOCATOR_SIG: &[u8] = b"PK\x06\x07";
const ZIP64_EOCD_SIG: &[u8] = b"PK\x06\x06";
/// Most entries read from one archive.
const MAX_ENTRIES: usize = 1_000_000;

/// One member of the archive.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Name in the central directory (the name PyTorch looks records up by).
    pub name: String,
    /// Name in the local header (may differ in crafted files).
    pub local_name: String,
    /// 0 = stored, 8 = deflated, anything else unreadable by PyTorch.
    pub method: u16,
    pub flags: u16,
    pub compressed_size: u64,
    pub size: u64,
    pub header_offset: u64,
    /// Absolute offset of the entry's data.
    pub data_start: u64,
}

impl Entry {
    /// Absolute end of the entry's (compressed) data.
    pub fn data_end(&self) -> u64 {
        self.data_start.saturating_add(self.compressed_size)
    }
}

/// The archive's members and what was wrong with its structure.
#[derive(Debug, Default)]
pub struct Archive {
    pub entries: Vec<Entry>,
    /// True when the central directory was missing or unreadable and local headers were walked.
    pub recovered: bool,
    /// Structural problems (unreadable local headers, entries past the end of the file).
    pub problems: Vec<String>,
    /// Bytes the directory says the file needs, when that is more than the file has.
    pub needs: Option<u64>,
}

fn u16_at(d: &[u8], p: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        d.get(p..p.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn u32_at(d: &[u8], p: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        d.get(p..p.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn u64_at(d: &[u8], p: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        d.get(p..p.checked_add(8)?)?.try_into().ok()?,
    ))
}
fn sig_at(d: &[u8], p: u64, sig: &[u8]) -> bool {
    usize::try_from(p)
        .ok()
        .and_then(|p| d.get(p..p.checked_add(4)?))
        .is_some_and(|s| s == sig)
}

/// Where the central directory is and how many entries it claims.
struct Directory {
    offset: u64,
    count: u64,
}

/// What the end records say: the directory's offset and entry count, and where the end records start
/// (the zip64 record when there is one, else the end-of-directory record).
struct End {
    offset: u64,
    count: u64,
    records_at: u64,
}

/// Bytes at the end of an archive that hold its end record (whatever its comment) and a zip64 locator.
pub const TAIL_LEN: u64 = 22 + 65535 + 20;

fn end_records(d: &[u8]) -> Option<End> {
    if d.len() < 22 {
        return None;
    }
    let lowest = d.len().saturating_sub(22 + 65535);
    let eocd = (lowest..=d.len() - 22)
        .rev()
        .find(|&p| &d[p..p + 4] == EOCD_SIG)?;
    let mut end = End {
        count: u16_at(d, eocd + 10)? as u64,
        offset: u32_at(d, eocd + 16)? as u64,
        records_at: eocd as u64,
    };
    if let Some(z) = zip64_record(d, eocd) {
        if sig_at(d, z, ZIP64_EOCD_SIG) {
            let z = z as usize;
            end = End {
                count: u64_at(d, z + 32)?,
                offset: u64_at(d, z + 48)?,
                records_at: z as u64,
            };
        }
    }
    Some(end)
}

/// The offset of the zip64 end record the locator before the end record at `eocd` points at, if any.
fn zip64_record(d: &[u8], eocd: usize) -> Option<u64> {
    (eocd >= 20 && &d[eocd - 20..eocd - 16] == ZIP64_LOCATOR_SIG).then(|| u64_at(d, eocd - 12))?
}

fn find_directory(d: &[u8]) -> Option<Directory> {
    let end = end_records(d)?;
    sig_at(d, end.offset, CENTRAL_SIG).then_some(Directory {
        offset: end.offset,
        count: end.count,
    })
}

/// Reads the zip64 extra field (0x0001) values that replace 0xFFFFFFFF fields, in order.
fn zip64_extra(extra: &[u8], want: [bool; 3], vals: &mut [u64; 3]) {
    let mut p = 0;
    while p + 4 <= extra.len() {
        let id = u16::from_le_bytes([extra[p], extra[p + 1]]);
        let len = u16::from_le_bytes([extra[p + 2], extra[p + 3]]) as usize;
        let body = &extra[p + 4..(p + 4 + len).min(extra.len())];
        if id == 1 {
            let mut q = 0;
            for (i, w) in want.iter().enumerate() {
                if *w {
                    if let Some(v) = u64_at(body, q) {
                        vals[i] = v;
                    }
                    q += 8;
                }
            }
            return;
        }
        p += 4 + len;
    }
}

/// Data start and local name of the entry whose local header is at `off`.
fn local_header(d: &[u8], off: u64) -> Option<(u64, String)> {
    if !sig_at(d, off, LOCAL_SIG) {
        return None;
    }
    let o = off as usize;
    let name_len = u16_at(d, o + 26)? as usize;
    let extra_len = u16_at(d, o + 28)? as usize;
    let name = d.get(o + 30..(o + 30 + name_len).min(d.len()))?;
    Some((
        off + 30 + name_len as u64 + extra_len as u64,
        String::from_utf8_lossy(name).into_owned(),
    ))
}

/// One record of the central directory, before its local header is read.
struct Central {
    name: String,
    method: u16,
    flags: u16,
    /// Size, compressed size, local header offset (zip64 values applied).
    vals: [u64; 3],
    /// Bytes of the record's name and extra field (the local header's are usually the same).
    name_extra: u64,
}

/// The records of the central directory, in order (at most `dir.count`, stopping at the first
/// unreadable one).
fn central(d: &[u8], dir: &Directory) -> Vec<Central> {
    let mut out = Vec::new();
    let mut p = dir.offset as usize;
    while (out.len() as u64) < dir.count
        && sig_at(d, p as u64, CENTRAL_SIG)
        && out.len() < MAX_ENTRIES
    {
        let (
            Some(flags),
            Some(method),
            Some(csize),
            Some(size),
            Some(nl),
            Some(el),
            Some(cl),
            Some(off),
        ) = (
            u16_at(d, p + 8),
            u16_at(d, p + 10),
            u32_at(d, p + 20),
            u32_at(d, p + 24),
            u16_at(d, p + 28),
            u16_at(d, p + 30),
            u16_at(d, p + 32),
            u32_at(d, p + 42),
        )
        else {
            break;
        };
        let (nl, el, cl) = (nl as usize, el as usize, cl as usize);
        let Some(name) = d.get(p + 46..p + 46 + nl) else {
            break;
        };
        let extra = d
            .get(p + 46 + nl..(p + 46 + nl + el).min(d.len()))
            .unwrap_or(&[]);
        let mut vals = [size as u64, csize as u64, off as u64];
        zip64_extra(
            extra,
            [size == u32::MAX, csize == u32::MAX, off == u32::MAX],
            &mut vals,
        );
        out.push(Central {
            name: String::from_utf8_lossy(name).into_owned(),
            method,
            flags,
            vals,
            name_extra: (nl + el) as u64,
        });
        p += 46 + nl + el + cl;
    }
    out
}

fn read_central(d: &[u8], dir: &Directory, a: &mut Archive) -> bool {
    for c in central(d, dir) {
        let [size, compressed_size, header_offset] = c.vals;
        match local_header(d, header_offset) {
            Some((data_start, local_name)) => a.entries.push(Entry {
                name: c.name,
                local_name,
                method: c.method,
                flags: c.flags,
                compressed_size,
                size,
                header_offset,
                data_start,
            }),
            None => a.problems.push(format!(
                "entry {}: no local header at offset {header_offset}",
                c.name
            )),
        }
    }
    !a.entries.is_empty() || dir.count == 0
}

/// An archive read piece by piece (an object in a store, or a local file read by positioned reads):
/// its bytes as far as fetched.
pub trait Pieces {
    /// The whole archive's length of bytes: the fetched ranges in place, zeros elsewhere.
    fn bytes(&self) -> &[u8];
    /// Fetches the ranges `(offset, length)`, each within the archive, into place.
    fn fetch(&mut self, ranges: &[(u64, u64)]) -> std::io::Result<()>;
    /// True when many small reads one after another cost little (a local file): structures found
    /// only by walking from record to record (a zip's local headers without a directory, a tar
    /// archive's members) are then fetched record by record instead of the whole archive being read.
    fn walks(&self) -> bool {
        false
    }
    /// True when [`Pieces::bytes`] holds every byte already (fetching does nothing).
    fn whole(&self) -> bool {
        false
    }
}

/// Bytes held whole, as [`Pieces`] (the walks that fetch as they go, over bytes at hand).
pub struct Whole<'a>(pub &'a [u8]);

impl Pieces for Whole<'_> {
    fn bytes(&self) -> &[u8] {
        self.0
    }

    fn fetch(&mut self, _ranges: &[(u64, u64)]) -> std::io::Result<()> {
        Ok(())
    }

    fn walks(&self) -> bool {
        true
    }

    fn whole(&self) -> bool {
        true
    }
}

/// Fetches `len` bytes at `off` through `p`, clamped to the archive.
pub(crate) fn fetch_at(p: &mut dyn Pieces, off: u64, len: u64) -> std::io::Result<()> {
    let size = p.bytes().len() as u64;
    let (a, b) = (off.min(size), off.saturating_add(len).min(size));
    if a < b {
        p.fetch(&[(a, b - a)])?;
    }
    Ok(())
}

/// Bytes fetched with each local header beyond its fixed part and the name and extra field its central
/// record gives (a local extra field is sometimes longer: PyTorch pads it to align the data).
const LOCAL_SLACK: u64 = 256;

/// Fetches through `p` the structure [`read`] looks at, and nothing else: the end records, the central
/// directory and every local header (the entries' data is left to the caller). `Ok(None)` when the
/// archive has no usable central directory: [`read`] would walk its local headers through the whole
/// archive, so it must be read whole.
pub fn fetch_directory(p: &mut dyn Pieces) -> std::io::Result<Option<Archive>> {
    let len = p.bytes().len() as u64;
    let tail = len.saturating_sub(TAIL_LEN);
    p.fetch(&[(tail, len - tail)])?;
    let Some(eocd) = end_records(p.bytes()).map(|e| e.records_at) else {
        return Ok(None);
    };
    // The end records as found so far: a zip64 record before the tail is fetched, then read again.
    if let Some(z) = zip64_record(p.bytes(), eocd as usize).filter(|&z| z < tail && z < len) {
        p.fetch(&[(z, 56.min(len - z))])?;
    }
    let Some(end) = end_records(p.bytes()) else {
        return Ok(None);
    };
    let from = end.offset.min(tail);
    if from < tail {
        // The directory runs from its offset to the end records (its bytes past them are in the tail).
        p.fetch(&[(from, tail - from)])?;
    }
    let Some(dir) = find_directory(p.bytes()) else {
        return Ok(None);
    };
    let records = central(p.bytes(), &dir);
    let headers: Vec<(u64, u64)> = records
        .iter()
        .filter(|c| c.vals[2] < len)
        .map(|c| {
            let at = c.vals[2];
            (at, (30 + c.name_extra + LOCAL_SLACK).min(len - at))
        })
        .collect();
    p.fetch(&headers)?;
    // A local header longer than its central record said: fetch the rest of it.
    let d = p.bytes();
    let longer: Vec<(u64, u64)> = headers
        .iter()
        .filter(|&&(at, n)| sig_at(d, at, LOCAL_SIG) && n >= 30)
        .filter_map(|&(at, n)| {
            let o = at as usize;
            let need = 30 + u16_at(d, o + 26)? as u64 + u16_at(d, o + 28)? as u64;
            (need > n).then(|| (at + n, (need - n).min(len - at - n)))
        })
        .filter(|&(_, n)| n > 0)
        .collect();
    if !longer.is_empty() {
        p.fetch(&longer)?;
    }
    Ok(read(p.bytes()).ok().filter(|a| !a.recovered))
}

/// Fetches through `p` the structure [`read`] looks at and nothing else, as [`fetch_directory`] does,
/// and, when the archive has no usable central directory and `p` [`Pieces::walks`], its local headers
/// one after another. `Ok(None)` when the archive must be read whole (no usable directory, and no
/// walk, or an entry whose end is found only by searching its data for the next header).
pub fn fetch_archive(p: &mut dyn Pieces) -> std::io::Result<Option<Archive>> {
    if let Some(a) = fetch_directory(p)? {
        return Ok(Some(a));
    }
    if !p.walks() || !walk_local(p, &mut Archive::default())? {
        return Ok(None);
    }
    Ok(read(p.bytes()).ok())
}

/// Walks local headers from the start of the file (no usable central directory), fetching each
/// header through `p` before reading it. `Ok(false)` when an entry's end is known only by searching
/// its data for the next header (sizes in a data descriptor) and `p` does not hold every byte.
fn walk_local(p: &mut dyn Pieces, a: &mut Archive) -> std::io::Result<bool> {
    let mut off = 0u64;
    loop {
        fetch_at(p, off, 30 + LOCAL_SLACK)?;
        if !sig_at(p.bytes(), off, LOCAL_SIG) || a.entries.len() >= MAX_ENTRIES {
            break;
        }
        let o = off as usize;
        let d = p.bytes();
        let (Some(flags), Some(method), Some(csize), Some(size), Some(nl), Some(el)) = (
            u16_at(d, o + 6),
            u16_at(d, o + 8),
            u32_at(d, o + 18),
            u32_at(d, o + 22),
            u16_at(d, o + 26),
            u16_at(d, o + 28),
        ) else {
            break;
        };
        if nl as u64 + el as u64 > LOCAL_SLACK {
            fetch_at(
                p,
                off + 30 + LOCAL_SLACK,
                nl as u64 + el as u64 - LOCAL_SLACK,
            )?;
        }
        let d = p.bytes();
        let Some((data_start, local_name)) = local_header(d, off) else {
            break;
        };
        let nl = local_name.len() as u64;
        let extra = d
            .get((off + 30 + nl) as usize..(data_start as usize).min(d.len()))
            .unwrap_or(&[]);
        let mut vals = [size as u64, csize as u64, 0];
        zip64_extra(
            extra,
            [size == u32::MAX, csize == u32::MAX, false],
            &mut vals,
        );
        let mut csize = vals[1];
        if flags & 8 != 0 && csize == 0 {
            if !p.whole() {
                return Ok(false);
            }
            // Sizes follow the data in a descriptor: the next header tells where the data ends.
            let from = (data_start as usize).min(d.len());
            csize = d[from..]
                .windows(4)
                .position(|w| w == LOCAL_SIG || w == CENTRAL_SIG)
                .unwrap_or(d.len() - from) as u64;
        }
        a.entries.push(Entry {
            name: local_name.clone(),
            local_name,
            method,
            flags,
            compressed_size: csize,
            size: vals[0].max(if method == 0 { csize } else { 0 }),
            header_offset: off,
            data_start,
        });
        let next = data_start.saturating_add(csize);
        if next <= off {
            break;
        }
        off = next;
        // Skip a data descriptor if one sits between this entry and the next header.
        fetch_at(p, off, 28)?;
        if !sig_at(p.bytes(), off, LOCAL_SIG) {
            for skip in [12u64, 16, 20, 24] {
                if sig_at(p.bytes(), off + skip, LOCAL_SIG) {
                    off += skip;
                    break;
                }
            }
        }
    }
    Ok(true)
}

/// Reads the archive's directory; `Err` when the bytes are no zip archive at all.
pub fn read(d: &[u8]) -> Result<Archive, String> {
    let mut a = Archive::default();
    let ok = find_directory(d).is_some_and(|dir| read_central(d, &dir, &mut a));
    if !ok {
        a.entries.clear();
        a.recovered = true;
        // Bytes at hand: nothing to fetch, nothing to fail.
        let _ = walk_local(&mut Whole(d), &mut a);
        if a.entries.is_empty() {
            return Err("zip archive without a readable directory or local headers".into());
        }
    }
    let len = d.len() as u64;
    let mut needs = 0u64;
    for e in &a.entries {
        if e.data_end() > len {
            needs = needs.max(e.data_end());
            a.problems.push(format!(
                "entry {}: data runs to byte {} but the file has {len}",
                e.name,
                e.data_end()
            ));
        }
    }
    if needs > 0 {
        a.needs = Some(needs);
    }
    Ok(a)
}

/// An entry's bytes: a stored entry's all of them, in place; a deflated entry's first `limit` bytes once
/// inflated, and whether it goes on past them (read the rest with [`inflater`]). `Err` says why they
/// cannot be had.
pub fn contents<'a>(d: &'a [u8], e: &Entry, limit: usize) -> Result<(Cow<'a, [u8]>, bool), String> {
    let start = (e.data_start as usize).min(d.len());
    let end = (e.data_end().min(d.len() as u64)) as usize;
    let raw = &d[start..end.max(start)];
    match e.method {
        0 => Ok((Cow::Borrowed(raw), false)),
        8 => {
            let mut out = Vec::new();
            let mut r = inflater(d, e);
            let res = (&mut r).take(limit as u64).read_to_end(&mut out);
            let more = out.len() == limit && r.read(&mut [0u8; 1]).is_ok_and(|n| n == 1);
            match res {
                Ok(_) => Ok((Cow::Owned(out), more)),
                // Truncated or corrupt: what inflated so far is still scanned.
                Err(_) if !out.is_empty() => Ok((Cow::Owned(out), false)),
                Err(err) => Err(format!("entry {}: cannot inflate ({err})", e.name)),
            }
        }
        m => Err(format!(
            "entry {}: compression method {m} (PyTorch reads only stored and deflated)",
            e.name
        )),
    }
}

/// Streams a deflated entry's inflated bytes in bounded memory.
pub struct Inflater<'a> {
    raw: &'a [u8],
    state: Box<InflateState>,
    done: bool,
}

/// A reader of entry `e`'s inflated bytes (for a deflated entry).
pub fn inflater<'a>(d: &'a [u8], e: &Entry) -> Inflater<'a> {
    let start = (e.data_start as usize).min(d.len());
    let end = (e.data_end().min(d.len() as u64)) as usize;
    Inflater {
        raw: &d[start..end.max(start)],
        state: InflateState::new_boxed(DataFormat::Raw),
        done: false,
    }
}

impl Read for Inflater<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while !self.done && !out.is_empty() {
            let r = inflate(&mut self.state, self.raw, out, MZFlush::None);
            self.raw = &self.raw[r.bytes_consumed..];
            match r.status {
                Ok(MZStatus::StreamEnd) => self.done = true,
                Ok(_) => {}
                Err(MZError::Buf) if r.bytes_written == 0 => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "deflate stream is truncated",
                    ))
                }
                Err(MZError::Buf) => {}
                Err(e) => {
                    if r.bytes_written > 0 {
                        self.done = true;
                        return Ok(r.bytes_written);
                    }
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("corrupt deflate data ({e:?})"),
                    ));
                }
            }
            if r.bytes_written > 0 {
                return Ok(r.bytes_written);
            }
        }
        Ok(0)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An archive fetched piecewise from bytes in memory, recording what was fetched.
    pub struct Fetched<'a> {
        pub whole: &'a [u8],
        pub image: Vec<u8>,
        pub got: Vec<(u64, u64)>,
        walks: bool,
    }

    impl<'a> Fetched<'a> {
        /// Nothing fetched yet of `whole`; `walks` as [`Pieces::walks`].
        pub fn new(whole: &'a [u8], walks: bool) -> Fetched<'a> {
            Fetched {
                whole,
                image: vec![0; whole.len()],
                got: Vec::new(),
                walks,
            }
        }
    }

    impl Pieces for Fetched<'_> {
        fn bytes(&self) -> &[u8] {
            &self.image
        }
        fn fetch(&mut self, ranges: &[(u64, u64)]) -> std::io::Result<()> {
            for &(off, len) in ranges {
                let (a, b) = (off as usize, (off + len) as usize);
                self.image[a..b].copy_from_slice(&self.whole[a..b]);
                self.got.push((off, len));
            }
            Ok(())
        }
        fn walks(&self) -> bool {
            self.walks
        }
    }

    /// Builds a stored zip: (central name, local name, data, flags).
    pub fn build(entries: &[(&str, &str, &[u8], u16)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (cname, lname, data, flags) in entries {
            let off = out.len() as u32;
            out.extend_from_slice(LOCAL_SIG);
            out.extend_from_slice(&20u16.to_le_bytes());
            out.extend_from_slice(&flags.to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes()); // stored
            out.extend_from_slice(&[0; 4]); // time, date
            out.extend_from_slice(&0xdeadbeefu32.to_le_bytes()); // wrong CRC on purpose
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(lname.len() as u16).to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(lname.as_bytes());
            out.extend_from_slice(data);
            central.extend_from_slice(CENTRAL_SIG);
            central.extend_from_slice(&[20, 3, 20, 0]);
            central.extend_from_slice(&flags.to_le_bytes());
            central.extend_from_slice(&0u16.to_le_bytes());
            central.extend_from_slice(&[0; 4]);
            central.extend_from_slice(&0xdeadbeefu32.to_le_bytes());
            central.extend_from_slice(&(data.len() as u32).to_le_bytes());
            central.extend_from_slice(&(data.len() as u32).to_le_bytes());
            central.extend_from_slice(&(cname.len() as u16).to_le_bytes());
            central.extend_from_slice(&[0; 12]);
            central.extend_from_slice(&off.to_le_bytes());
            central.extend_from_slice(cname.as_bytes());
        }
        let cd_off = out.len() as u32;
        out.extend_from_slice(&central);
        out.extend_from_slice(EOCD_SIG);
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        out.extend_from_slice(&(central.len() as u32).to_le_bytes());
        out.extend_from_slice(&cd_off.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out
    }

    #[test]
    fn lenient_like_pytorch() {
        let z = build(&[
            ("a/data.pkl", "a/datap.kl", b"hello", 0x41),
            ("a/data/0", "a/data/0", b"xy", 0),
        ]);
        let a = read(&z).unwrap();
        assert!(!a.recovered);
        assert_eq!(a.entries.len(), 2);
        assert_eq!(a.entries[0].name, "a/data.pkl");
        assert_eq!(a.entries[0].local_name, "a/datap.kl");
        assert_eq!(&*contents(&z, &a.entries[0], 1 << 20).unwrap().0, b"hello");
        assert_eq!(
            a.entries[1].data_start as usize,
            z.windows(2).position(|w| w == b"xy").unwrap()
        );
    }

    #[test]
    fn walks_local_headers_without_directory() {
        let z = build(&[
            ("a/data.pkl", "a/data.pkl", b"hello", 0),
            ("a/data/0", "a/data/0", b"xy", 0),
        ]);
        let cut = z.windows(4).position(|w| w == CENTRAL_SIG).unwrap();
        let a = read(&z[..cut]).unwrap();
        assert!(a.recovered);
        assert_eq!(a.entries.len(), 2);
        assert_eq!(&*contents(&z, &a.entries[1], 10).unwrap().0, b"xy");
    }

    #[test]
    fn truncation_and_garbage() {
        let z = build(&[("a/data/0", "a/data/0", &[7u8; 100], 0)]);
        let a = read(&z[..60]).unwrap();
        assert!(a.needs.is_some());
        assert!(read(b"PK\x03\x04").is_err());
        assert!(read(b"not a zip at all, not at all").is_err());
        for n in 0..z.len() {
            let _ = read(&z[..n]).map(|a| {
                for e in &a.entries {
                    let _ = contents(&z[..n], e, 1000);
                }
            });
        }
    }

    #[test]
    fn inflates_deflated_entries() {
        let data = b"a pickle, deflated a pickle, deflated".repeat(10);
        let packed = miniz_oxide::deflate::compress_to_vec(&data, 6);
        let e = Entry {
            name: "x".into(),
            local_name: "x".into(),
            method: 8,
            flags: 0,
            compressed_size: packed.len() as u64,
            size: data.len() as u64,
            header_offset: 0,
            data_start: 0,
        };
        assert_eq!(
            contents(&packed, &e, 1 << 20).unwrap(),
            (Cow::Owned(data.clone()), false)
        );
        let (head, more) = contents(&packed, &e, 10).unwrap();
        assert_eq!((&*head, more), (&data[..10], true));
        // Exactly the limit: nothing more to stream.
        assert!(!contents(&packed, &e, data.len()).unwrap().1);
        let mut all = Vec::new();
        inflater(&packed, &e).read_to_end(&mut all).unwrap();
        assert_eq!(all, data);
    }
}
