//! The pre-1.6 PyTorch tar checkpoint (torch/serialization.py `legacy_load`): a tar archive whose
//! `storages`, `tensors` and `pickle` members torch unpickles; members are found as Python's `tarfile`
//! finds them (ustar prefix, pax `path`/`size`, GNU long names; the last member of a name wins).

use super::zip::{fetch_at, Pieces, Whole};

/// Bytes of a tar header block.
const BLOCK: usize = 512;
/// Most members read from one archive.
const MAX_MEMBERS: usize = 100_000;

/// One regular file in the archive.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub name: String,
    /// Absolute offset of the member's data.
    pub data_start: u64,
    pub size: u64,
}

/// `tarfile.nti`: a NUL/space-terminated octal field, or base-256 when the first byte has its top bit.
fn number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        if field[0] != 0x80 {
            return None; // negative base-256 values are no size
        }
        return field[1..]
            .iter()
            .try_fold(0u64, |a, &b| a.checked_mul(256)?.checked_add(b as u64));
    }
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    let text = std::str::from_utf8(&field[..end]).ok()?.trim();
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

/// True when the 512-byte block is a tar header with a valid checksum (what `tarfile.open` requires of
/// the first block; torch tries the tar loader first on every non-zip file).
pub fn is_header(block: &[u8]) -> bool {
    if block.len() < BLOCK || block.iter().all(|&b| b == 0) {
        return false;
    }
    let Some(want) = number(&block[148..156]) else {
        return false;
    };
    let unsigned: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                b as u64
            }
        })
        .sum();
    let signed: i64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                b as i8 as i64
            }
        })
        .sum();
    want == unsigned || want as i64 == signed
}

fn text(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// Applies the `path` and `size` records of a pax extended header.
fn pax(data: &[u8], name: &mut Option<String>, size: &mut Option<u64>) {
    let mut p = 0;
    while p < data.len() {
        let Some(sp) = data[p..].iter().position(|&b| b == b' ') else {
            return;
        };
        let Some(len) = std::str::from_utf8(&data[p..p + sp])
            .ok()
            .and_then(|t| t.parse::<usize>().ok())
        else {
            return;
        };
        if len <= sp || p + len > data.len() {
            return;
        }
        let rec = &data[p + sp + 1..p + len];
        let rec = rec.strip_suffix(b"\n").unwrap_or(rec);
        if let Some(eq) = rec.iter().position(|&b| b == b'=') {
            let (k, v) = (&rec[..eq], &rec[eq + 1..]);
            match k {
                b"path" => *name = Some(String::from_utf8_lossy(v).into_owned()),
                b"size" => *size = std::str::from_utf8(v).ok().and_then(|t| t.parse().ok()),
                _ => {}
            }
        }
        p += len;
    }
}

/// The archive's regular members, in order, and what was wrong with it.
pub fn members(d: &[u8]) -> (Vec<Member>, Vec<String>) {
    // Bytes at hand: nothing to fetch, nothing to fail.
    fetch_members(&mut Whole(d)).unwrap_or_default()
}

/// [`members`] of an archive read through `p`, each header block (and each pax or long-name record
/// it reads) fetched before it is read.
pub fn fetch_members(p: &mut dyn Pieces) -> std::io::Result<(Vec<Member>, Vec<String>)> {
    let len = p.bytes().len();
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let mut off = 0usize;
    let (mut next_name, mut next_size) = (None, None);
    while off + BLOCK <= len && out.len() < MAX_MEMBERS {
        fetch_at(p, off as u64, BLOCK as u64)?;
        let h: [u8; BLOCK] = p.bytes()[off..off + BLOCK].try_into().unwrap();
        let h = &h;
        if h.iter().all(|&b| b == 0) {
            break;
        }
        if !is_header(h) {
            problems.push(format!("bad tar header checksum at byte {off}"));
            break;
        }
        let Some(mut size) = number(&h[124..136]) else {
            problems.push(format!("bad tar member size at byte {}", off + 124));
            break;
        };
        if let Some(s) = next_size.take() {
            size = s;
        }
        let kind = h[156];
        let mut name = text(&h[..100]);
        if &h[257..263] == b"ustar\0" {
            let prefix = text(&h[345..500]);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        if let Some(n) = next_name.take() {
            name = n;
        }
        let start = off + BLOCK;
        let body_end = start.saturating_add(size as usize).min(len);
        if matches!(kind, b'x' | b'L') {
            fetch_at(p, start as u64, body_end.saturating_sub(start) as u64)?;
        }
        let body = p.bytes().get(start..body_end);
        match kind {
            b'x' => pax(body.unwrap_or(&[]), &mut next_name, &mut next_size),
            b'L' => next_name = body.map(text),
            b'0' | 0 | b'7' => out.push(Member {
                name: name.clone(),
                data_start: start as u64,
                size,
            }),
            _ => {}
        }
        // Directories, links and devices have no data (tarfile skips data only for files and unknowns).
        let has_data = !matches!(kind, b'1' | b'2' | b'3' | b'4' | b'5' | b'6');
        let skip = if has_data {
            size.div_ceil(BLOCK as u64) * BLOCK as u64
        } else {
            0
        };
        let Some(next) = (start as u64)
            .checked_add(skip)
            .filter(|&n| n <= usize::MAX as u64)
        else {
            break;
        };
        if start as u64 + size > len as u64 && has_data {
            problems.push(format!(
                "member {name}: data runs to byte {} but the file has {len}",
                start as u64 + size,
            ));
        }
        off = next as usize;
    }
    Ok((out, problems))
}

/// The last member named `name` (as `TarFile.getmember` picks it).
pub fn find<'m>(members: &'m [Member], name: &str) -> Option<&'m Member> {
    members.iter().rev().find(|m| m.name == name)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A ustar archive of (name, data) members.
    pub fn build(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data) in entries {
            let mut h = [0u8; BLOCK];
            h[..name.len()].copy_from_slice(name.as_bytes());
            h[100..107].copy_from_slice(b"0000644");
            h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
            h[156] = b'0';
            h[257..263].copy_from_slice(b"ustar\0");
            h[263..265].copy_from_slice(b"00");
            h[148..156].copy_from_slice(b"        ");
            let sum: u32 = h.iter().map(|&b| b as u32).sum();
            h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
            out.extend_from_slice(&h);
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
        }
        out.resize(out.len() + 2 * BLOCK, 0);
        out
    }

    #[test]
    fn reads_members_like_tarfile() {
        let t = build(&[("storages", b"abc"), ("pickle", b"xyz"), ("pickle", b"2nd")]);
        assert!(is_header(&t[..BLOCK]));
        let (m, problems) = members(&t);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(m.len(), 3);
        let p = find(&m, "pickle").unwrap();
        assert_eq!(&t[p.data_start as usize..][..p.size as usize], b"2nd");
        let mut bad = t.clone();
        bad[0] ^= 1;
        assert!(!is_header(&bad[..BLOCK]));
        for n in 0..t.len() {
            let _ = members(&t[..n]);
        }
    }

    #[test]
    fn pax_path_and_size() {
        let rec = b"15 path=pickle\n";
        let mut t = build(&[("PaxHeader", rec), ("ignored", b"data")]);
        t[156] = b'x';
        // Fix the checksum after changing the type flag.
        t[148..156].copy_from_slice(b"        ");
        let sum: u32 = t[..BLOCK].iter().map(|&b| b as u32).sum();
        t[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        let (m, _) = members(&t);
        assert_eq!(
            m.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["pickle"]
        );
    }
}
