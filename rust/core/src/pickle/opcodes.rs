//! Decoding pickle opcodes (protocols 0-5) and their operands, one at a time, without running them.

use std::borrow::Cow;

/// One decoded opcode with its operand.
#[derive(Debug, Clone, PartialEq)]
pub enum Op<'a> {
    Mark,
    Stop,
    Pop,
    PopMark,
    Dup,
    /// INT / BININT / BININT1 / BININT2 / LONG / LONG1 / LONG4 that fits in an i64.
    Int(i64),
    /// An integer too large for an i64.
    BigInt,
    /// Protocol 0 `INT` spelled `00` / `01`, NEWTRUE, NEWFALSE.
    Bool(bool),
    Float(f64),
    None,
    /// Protocol 0 persistent id (a text line).
    PersId(Cow<'a, str>),
    BinPersId,
    Reduce,
    /// Any of the string opcodes (STRING, BINSTRING, SHORT_BINSTRING, UNICODE, BINUNICODE(8),
    /// SHORT_BINUNICODE): Python 3 gives a `str` for all of them.
    Str(Cow<'a, str>),
    /// BINBYTES(8) / SHORT_BINBYTES / BYTEARRAY8 with the payload's length.
    Bytes(u64),
    Append,
    Build,
    /// GLOBAL `module name` (protocol 0 text).
    Global(Cow<'a, str>, Cow<'a, str>),
    Dict,
    EmptyDict,
    Appends,
    /// GET / BINGET / LONG_BINGET.
    Get(u64),
    /// INST `module name` (creates an instance from the items after the mark).
    Inst(Cow<'a, str>, Cow<'a, str>),
    List,
    EmptyList,
    Obj,
    /// PUT / BINPUT / LONG_BINPUT.
    Put(u64),
    SetItem,
    Tuple,
    EmptyTuple,
    SetItems,
    Proto(u8),
    NewObj,
    /// EXT1 / EXT2 / EXT4: an import through the copyreg extension registry.
    Ext(i64),
    Tuple1,
    Tuple2,
    Tuple3,
    EmptySet,
    AddItems,
    FrozenSet,
    NewObjEx,
    StackGlobal,
    Memoize,
    Frame(u64),
    NextBuffer,
    ReadonlyBuffer,
}

/// Why an opcode could not be decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodeError {
    /// The stream ends inside the opcode or its operand.
    Truncated,
    /// The byte is no pickle opcode.
    UnknownOpcode(u8),
    /// The operand is malformed (bad number, bad quoting, bad UTF-8 in a GLOBAL, ...).
    BadOperand(&'static str),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("pickle data ends inside an opcode"),
            DecodeError::UnknownOpcode(b) => write!(f, "unknown opcode 0x{b:02x}"),
            DecodeError::BadOperand(what) => write!(f, "malformed operand: {what}"),
        }
    }
}

type R<T> = Result<T, DecodeError>;

struct Cursor<'a> {
    d: &'a [u8],
    p: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64) -> R<&'a [u8]> {
        let end = (self.p as u64)
            .checked_add(n)
            .filter(|&e| e <= self.d.len() as u64)
            .ok_or(DecodeError::Truncated)? as usize;
        let s = &self.d[self.p..end];
        self.p = end;
        Ok(s)
    }
    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> R<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> R<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn i32(&mut self) -> R<i32> {
        Ok(i32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> R<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    /// A text line without its `\n` (Python requires the newline).
    fn line(&mut self) -> R<&'a [u8]> {
        let rest = &self.d[self.p..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(DecodeError::Truncated)?;
        self.p += n + 1;
        Ok(&rest[..n])
    }
}

/// Decodes the opcode at `pos`; returns it and the position of the next one.
pub fn decode(data: &[u8], pos: usize) -> R<(Op<'_>, usize)> {
    let mut c = Cursor { d: data, p: pos };
    let code = c.u8()?;
    let op = match code {
        b'(' => Op::Mark,
        b'.' => Op::Stop,
        b'0' => Op::Pop,
        b'1' => Op::PopMark,
        b'2' => Op::Dup,
        b'F' => Op::Float(parse_float(c.line()?)?),
        b'I' => load_int(c.line()?)?,
        b'J' => Op::Int(c.i32()? as i64),
        b'K' => Op::Int(c.u8()? as i64),
        b'L' => {
            let t = c.line()?;
            // CPython drops one trailing `L` (not required), then reads the rest as `int(s, 0)`.
            let t = t.strip_suffix(b"L").unwrap_or(t);
            match py_long(c_string(t), 0) {
                Some(v) => int_op(v),
                None => return Err(DecodeError::BadOperand("LONG is not a number")),
            }
        }
        b'M' => Op::Int(c.u16()? as i64),
        b'N' => Op::None,
        b'P' => Op::PersId(String::from_utf8_lossy(c.line()?)),
        b'Q' => Op::BinPersId,
        b'R' => Op::Reduce,
        b'S' => Op::Str(parse_string_literal(c.line()?)?),
        b'T' => {
            let n = c.i32()?;
            if n < 0 {
                return Err(DecodeError::BadOperand("negative BINSTRING length"));
            }
            Op::Str(String::from_utf8_lossy(c.take(n as u64)?))
        }
        b'U' => {
            let n = c.u8()?;
            Op::Str(String::from_utf8_lossy(c.take(n as u64)?))
        }
        b'V' => Op::Str(raw_unicode_escape(c.line()?)),
        b'X' => {
            let n = c.u32()?;
            Op::Str(String::from_utf8_lossy(c.take(n as u64)?))
        }
        b'a' => Op::Append,
        b'b' => Op::Build,
        b'c' => {
            let (m, n) = two_lines(&mut c)?;
            Op::Global(m, n)
        }
        b'd' => Op::Dict,
        b'}' => Op::EmptyDict,
        b'e' => Op::Appends,
        b'g' => Op::Get(parse_index(c.line()?)?),
        b'h' => Op::Get(c.u8()? as u64),
        b'i' => {
            let (m, n) = two_lines(&mut c)?;
            Op::Inst(m, n)
        }
        b'j' => Op::Get(c.u32()? as u64),
        b'l' => Op::List,
        b']' => Op::EmptyList,
        b'o' => Op::Obj,
        b'p' => Op::Put(parse_index(c.line()?)?),
        b'q' => Op::Put(c.u8()? as u64),
        b'r' => Op::Put(c.u32()? as u64),
        b's' => Op::SetItem,
        b't' => Op::Tuple,
        b')' => Op::EmptyTuple,
        b'u' => Op::SetItems,
        b'G' => Op::Float(f64::from_be_bytes(c.take(8)?.try_into().unwrap())),
        b'B' => {
            let n = c.u32()? as u64;
            c.take(n)?;
            Op::Bytes(n)
        }
        b'C' => {
            let n = c.u8()? as u64;
            c.take(n)?;
            Op::Bytes(n)
        }
        0x80 => Op::Proto(c.u8()?),
        0x81 => Op::NewObj,
        0x82 => Op::Ext(c.u8()? as i64),
        0x83 => Op::Ext(c.u16()? as i64),
        0x84 => Op::Ext(c.i32()? as i64),
        0x85 => Op::Tuple1,
        0x86 => Op::Tuple2,
        0x87 => Op::Tuple3,
        0x88 => Op::Bool(true),
        0x89 => Op::Bool(false),
        0x8a => {
            let n = c.u8()? as u64;
            long_le(c.take(n)?)
        }
        0x8b => {
            let n = c.i32()?;
            if n < 0 {
                return Err(DecodeError::BadOperand("negative LONG4 length"));
            }
            long_le(c.take(n as u64)?)
        }
        0x8c => {
            let n = c.u8()? as u64;
            Op::Str(String::from_utf8_lossy(c.take(n)?))
        }
        0x8d => {
            let n = c.u64()?;
            Op::Str(String::from_utf8_lossy(c.take(n)?))
        }
        0x8e | 0x96 => {
            let n = c.u64()?;
            c.take(n)?;
            Op::Bytes(n)
        }
        0x8f => Op::EmptySet,
        0x90 => Op::AddItems,
        0x91 => Op::FrozenSet,
        0x92 => Op::NewObjEx,
        0x93 => Op::StackGlobal,
        0x94 => Op::Memoize,
        0x95 => Op::Frame(c.u64()?),
        0x97 => Op::NextBuffer,
        0x98 => Op::ReadonlyBuffer,
        other => return Err(DecodeError::UnknownOpcode(other)),
    };
    Ok((op, c.p))
}

/// GLOBAL / INST operands: two UTF-8 lines (Python decodes them strictly).
fn two_lines<'a>(c: &mut Cursor<'a>) -> R<(Cow<'a, str>, Cow<'a, str>)> {
    let m = c.line()?;
    let n = c.line()?;
    let m = std::str::from_utf8(m)
        .map_err(|_| DecodeError::BadOperand("GLOBAL module is not UTF-8"))?;
    let n =
        std::str::from_utf8(n).map_err(|_| DecodeError::BadOperand("GLOBAL name is not UTF-8"))?;
    Ok((Cow::Borrowed(m), Cow::Borrowed(n)))
}

fn ascii_trim(t: &[u8]) -> &[u8] {
    let s = t
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(t.len());
    let e = t
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(s, |e| e + 1);
    &t[s..e]
}

/// C's `isspace` in the C locale, which is also CPython's `Py_ISSPACE`: includes `\v` and `\f`.
fn c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// The operand as the C string CPython's unpickler parses: it ends at the first NUL byte.
fn c_string(t: &[u8]) -> &[u8] {
    t.iter().position(|&b| b == 0).map_or(t, |i| &t[..i])
}

/// An integer value as a pickle operand gives it: i64, or wider.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Int {
    Small(i64),
    Big,
}

fn int_op(v: Int) -> Op<'static> {
    match v {
        Int::Small(v) => Op::Int(v),
        Int::Big => Op::BigInt,
    }
}

/// Accumulates digits of `base` into an i64 magnitude (saturating into `Int::Big`).
fn accumulate(acc: Option<i128>, digit: u32, base: u32) -> Option<i128> {
    acc.and_then(|a| a.checked_mul(base as i128))
        .and_then(|a| a.checked_add(digit as i128))
        .filter(|a| *a <= i64::MAX as i128 + 1)
}

fn finish(neg: bool, mag: Option<i128>) -> Int {
    match mag {
        Some(m) => {
            let v = if neg { -m } else { m };
            i64::try_from(v).map_or(Int::Big, Int::Small)
        }
        None => Int::Big,
    }
}

/// Where the digits of a C-style number start in `t` (after leading whitespace and an optional sign),
/// and whether the sign was `-`: the common front of `py_long` and `c_strtol`.
fn space_and_sign(t: &[u8]) -> (usize, bool) {
    let mut i = 0;
    while i < t.len() && c_space(t[i]) {
        i += 1;
    }
    let neg = i < t.len() && t[i] == b'-';
    if i < t.len() && (t[i] == b'+' || t[i] == b'-') {
        i += 1;
    }
    (i, neg)
}

/// CPython's `PyLong_FromString(s, NULL, base)` (base 0 or 10) on a C string: surrounding whitespace,
/// a sign, for base 0 a `0x`/`0o`/`0b` prefix (and no other leading zero on a non-zero value), single
/// `_` between digits (and right after a prefix). `None` where CPython raises ValueError.
fn py_long(t: &[u8], base: u32) -> Option<Int> {
    let (mut i, neg) = space_and_sign(t);
    let mut radix = if base == 0 { 10 } else { base };
    let mut prefixed = false;
    if base == 0 && i + 1 < t.len() && t[i] == b'0' {
        radix = match t[i + 1].to_ascii_lowercase() {
            b'x' => 16,
            b'o' => 8,
            b'b' => 2,
            _ => 10,
        };
        if radix != 10 {
            prefixed = true;
            i += 2;
            if i < t.len() && t[i] == b'_' {
                i += 1;
            }
        }
    }
    let digits_start = i;
    let mut mag = Some(0i128);
    let mut last_underscore = false;
    let mut ndigits = 0;
    let mut nonzero = false;
    while i < t.len() {
        let b = t[i];
        if b == b'_' {
            if last_underscore || ndigits == 0 {
                return None;
            }
            last_underscore = true;
            i += 1;
            continue;
        }
        let Some(d) = (b as char).to_digit(radix) else {
            break;
        };
        nonzero |= d != 0;
        mag = accumulate(mag, d, radix);
        ndigits += 1;
        last_underscore = false;
        i += 1;
    }
    if ndigits == 0 || last_underscore {
        return None;
    }
    // Base 0 without a prefix: a leading zero is allowed only when the value is zero ("00" is 0).
    if base == 0 && !prefixed && t[digits_start] == b'0' && nonzero {
        return None;
    }
    while i < t.len() && c_space(t[i]) {
        i += 1;
    }
    (i == t.len()).then(|| finish(neg, mag))
}

/// C's `strtol(s, &end, 0)` in the C locale: leading whitespace, a sign, `0x` hex, a leading `0`
/// octal, else decimal. Returns the value and the index where parsing stopped (`None` on overflow).
fn c_strtol(t: &[u8]) -> (Option<i64>, usize) {
    let (mut i, neg) = space_and_sign(t);
    let mut radix = 10;
    if i < t.len() && t[i] == b'0' {
        let hex =
            i + 2 < t.len() && t[i + 1].eq_ignore_ascii_case(&b'x') && t[i + 2].is_ascii_hexdigit();
        if hex {
            radix = 16;
            i += 2;
        } else {
            radix = 8;
        }
    }
    let start = i;
    let mut mag = Some(0i128);
    while i < t.len() {
        let Some(d) = (t[i] as char).to_digit(radix) else {
            break;
        };
        mag = accumulate(mag, d, radix);
        i += 1;
    }
    if i == start {
        return (Some(0), 0);
    }
    match finish(neg, mag) {
        Int::Small(v) => (Some(v), i),
        Int::Big => (None, i),
    }
}

/// Protocol 0 `INT`, as CPython's `load_int`: `strtol(s, 0)` when it consumes the whole C string, and a
/// bool when the line is two characters long and the value 0 or 1 (`I00`, `I01`, also `I+1`); else
/// `int(s, 0)`.
fn load_int(line: &[u8]) -> R<Op<'static>> {
    let t = c_string(line);
    if let (Some(v), end) = c_strtol(t) {
        if end == t.len() && end > 0 {
            return Ok(if line.len() == 2 && (v == 0 || v == 1) {
                Op::Bool(v == 1)
            } else {
                Op::Int(v)
            });
        }
    }
    py_long(t, 0)
        .map(int_op)
        .ok_or(DecodeError::BadOperand("INT is not a number"))
}

/// GET / PUT index, as CPython's `load_get` / `load_put`: `int(s)` in base 10, not negative, and a
/// `Py_ssize_t`.
fn parse_index(t: &[u8]) -> R<u64> {
    match py_long(c_string(t), 10) {
        Some(Int::Small(v)) if v >= 0 => Ok(v as u64),
        _ => Err(DecodeError::BadOperand("memo index is not a number")),
    }
}

/// How far an opcode reaches, from its first byte: a byte count (length-prefixed operands) or a number
/// of text lines. `None` when the header itself is incomplete or bad.
#[derive(Debug, PartialEq)]
pub enum Extent {
    Bytes(u64),
    Lines(u8),
}

/// The extent of the opcode at the start of `d` (see [`Extent`]).
pub fn extent(d: &[u8]) -> Option<Extent> {
    let le = |n: usize| -> Option<u64> {
        let b = d.get(1..1 + n)?;
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(b);
        Some(u64::from_le_bytes(v))
    };
    let sized = |n: usize, signed: bool| -> Option<Extent> {
        let len = le(n)?;
        if signed && len & 0x8000_0000 != 0 {
            return None;
        }
        Some(Extent::Bytes(1 + n as u64 + len))
    };
    match *d.first()? {
        b'F' | b'I' | b'L' | b'P' | b'S' | b'V' | b'g' | b'p' => Some(Extent::Lines(1)),
        b'c' | b'i' => Some(Extent::Lines(2)),
        b'T' | 0x8b => sized(4, true),
        b'X' | b'B' => sized(4, false),
        b'U' | b'C' | 0x8a | 0x8c => sized(1, false),
        0x8d | 0x8e | 0x96 => le(8).and_then(|n| n.checked_add(9)).map(Extent::Bytes),
        _ => None,
    }
}

/// Where to go on after an opcode at `pos` that cannot be decoded: past its text line(s) for a
/// line-operand opcode, else the next byte.
pub fn resync_point(d: &[u8], pos: usize) -> usize {
    if let Some(Extent::Lines(n)) = extent(&d[pos..]) {
        let mut left = n;
        for (i, &b) in d[pos..].iter().enumerate() {
            if b == b'\n' {
                left -= 1;
                if left == 0 {
                    return pos + i + 1;
                }
            }
        }
        return d.len();
    }
    pos + 1
}

fn parse_float(t: &[u8]) -> R<f64> {
    let t = ascii_trim(t);
    std::str::from_utf8(t)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .ok_or(DecodeError::BadOperand("FLOAT is not a number"))
}

/// LONG1 / LONG4 payload: little-endian two's complement.
fn long_le(b: &[u8]) -> Op<'static> {
    if b.is_empty() {
        return Op::Int(0);
    }
    if b.len() > 8 {
        let sign = if b[b.len() - 1] & 0x80 != 0 { 0xff } else { 0 };
        if b[8..].iter().any(|&x| x != sign) || (b[7] & 0x80) != (sign & 0x80) {
            return Op::BigInt;
        }
    }
    let mut buf = if b[b.len().min(8) - 1] & 0x80 != 0 {
        [0xffu8; 8]
    } else {
        [0u8; 8]
    };
    let n = b.len().min(8);
    buf[..n].copy_from_slice(&b[..n]);
    Op::Int(i64::from_le_bytes(buf))
}

/// Protocol 0 STRING operand: a quoted Python 2 string literal with backslash escapes.
fn parse_string_literal(t: &[u8]) -> R<Cow<'_, str>> {
    let t = ascii_trim(t);
    if t.len() < 2 || (t[0] != b'\'' && t[0] != b'"') || t[t.len() - 1] != t[0] {
        return Err(DecodeError::BadOperand("STRING is not quoted"));
    }
    let body = &t[1..t.len() - 1];
    if !body.contains(&b'\\') {
        return Ok(String::from_utf8_lossy(body));
    }
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        i += 1;
        if b != b'\\' || i >= body.len() {
            out.push(b);
            continue;
        }
        let e = body[i];
        i += 1;
        match e {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'v' => out.push(11),
            b'\n' => {}
            b'x' => {
                let h = body.get(i..i + 2).and_then(|h| std::str::from_utf8(h).ok());
                let v = h.and_then(|h| u8::from_str_radix(h, 16).ok());
                match v {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => return Err(DecodeError::BadOperand("bad \\x escape in STRING")),
                }
            }
            b'0'..=b'7' => {
                let mut v = (e - b'0') as u32;
                for _ in 0..2 {
                    match body.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + (d - b'0') as u32;
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(v as u8);
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Ok(Cow::Owned(String::from_utf8_lossy(&out).into_owned()))
}

/// Protocol 0 UNICODE operand: latin-1 text with `\uXXXX` / `\UXXXXXXXX` escapes.
fn raw_unicode_escape(t: &[u8]) -> Cow<'_, str> {
    if t.is_ascii() && !t.contains(&b'\\') {
        return Cow::Borrowed(std::str::from_utf8(t).unwrap());
    }
    let mut out = String::with_capacity(t.len());
    let mut i = 0;
    while i < t.len() {
        let b = t[i];
        if b == b'\\' && i + 1 < t.len() && (t[i + 1] == b'u' || t[i + 1] == b'U') {
            let n = if t[i + 1] == b'u' { 4 } else { 8 };
            let hex = t
                .get(i + 2..i + 2 + n)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(ch) = hex
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .and_then(char::from_u32)
            {
                out.push(ch);
                i += 2 + n;
                continue;
            }
        }
        out.push(b as char);
        i += 1;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(d: &[u8]) -> Op<'_> {
        decode(d, 0).unwrap().0
    }

    #[test]
    fn decodes_operands() {
        assert_eq!(
            one(b"cos\nsystem\n"),
            Op::Global("os".into(), "system".into())
        );
        assert_eq!(one(b"I01\n"), Op::Bool(true));
        assert_eq!(one(b"I-42\n"), Op::Int(-42));
        assert_eq!(one(b"L123L\n"), Op::Int(123));
        assert_eq!(one(b"I99999999999999999999999\n"), Op::BigInt);
        assert_eq!(one(b"S'a\\nb'\n"), Op::Str("a\nb".into()));
        assert_eq!(one(b"Vx\\u00e9\n"), Op::Str("x\u{e9}".into()));
        assert_eq!(one(b"J\xff\xff\xff\xff"), Op::Int(-1));
        assert_eq!(one(b"\x8a\x02\x00\x80"), Op::Int(-32768));
        assert_eq!(one(b"\x8a\x01\x80"), Op::Int(-128));
        assert_eq!(
            one(b"\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"),
            Op::BigInt
        );
        assert_eq!(one(b"\x8c\x02os"), Op::Str("os".into()));
        assert_eq!(one(b"G?\xf0\x00\x00\x00\x00\x00\x00"), Op::Float(1.0));
        assert_eq!(one(b"g12\n"), Op::Get(12));
        assert_eq!(decode(b"C\x03abcN", 0).unwrap(), (Op::Bytes(3), 5));
    }

    /// Operands as CPython's C unpickler reads them (`_pickle.c` load_int: strtol base 0, then
    /// `int(s, 0)`; load_long: `int(s, 0)`; load_get / load_put: `int(s)`), values as Python computes them.
    #[test]
    fn operands_parse_like_cpython() {
        for (line, want) in [
            (&b"I0x1f\n"[..], Op::Int(31)),
            (b"I0o17\n", Op::Int(15)),
            (b"I0b101\n", Op::Int(5)),
            (b"I010\n", Op::Int(8)), // C strtol reads a leading 0 as octal
            (b"I1_000\n", Op::Int(1000)),
            (b"I\x0b 42\x0c\n", Op::Int(42)),
            (b"I-0x10\n", Op::Int(-16)),
            (b"I7\x00junk\n", Op::Int(7)), // C strings end at NUL
            (b"I+1\n", Op::Bool(true)),
            (b"I00\n", Op::Bool(false)),
            (b"I 1 \n", Op::Int(1)),
            (b"L0x_ff\n", Op::Int(255)),
            (b"L12_3L\n", Op::Int(123)),
            (b"L0\n", Op::Int(0)),
            (b"I99999999999999999999\n", Op::BigInt),
            (b"g0012\n", Op::Get(12)),
            (b"g1_2\n", Op::Get(12)),
            (b"p\x0b3\t\n", Op::Put(3)),
        ] {
            assert_eq!(one(line), want, "{:?}", String::from_utf8_lossy(line));
        }
        for bad in [
            &b"I08\n"[..],
            b"I1__0\n",
            b"I_1\n",
            b"I1_\n",
            b"I0x\n",
            b"L010\n", // int('010', 0) is an error (no C strtol for LONG)
            b"g0x1\n",
            b"p-1\n",
            b"I\n",
        ] {
            assert!(
                matches!(decode(bad, 0), Err(DecodeError::BadOperand(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn extents_and_resync() {
        assert_eq!(extent(b"\x8e\x05\0\0\0\0\0\0\0"), Some(Extent::Bytes(14)));
        assert_eq!(extent(b"X\x02\0\0\0"), Some(Extent::Bytes(7)));
        assert_eq!(extent(b"T\xff\xff\xff\xff"), None);
        assert_eq!(extent(b"cos"), Some(Extent::Lines(2)));
        assert_eq!(resync_point(b"I1.5\nN", 0), 5);
        assert_eq!(resync_point(b"\x01N", 0), 1);
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            decode(b"X\xff\xff\xff\x7fab", 0),
            Err(DecodeError::Truncated)
        );
        assert_eq!(decode(b"cos\nsys", 0), Err(DecodeError::Truncated));
        assert_eq!(
            decode(b"cmod\n\xf8\n", 0).unwrap_err(),
            DecodeError::BadOperand("GLOBAL name is not UTF-8")
        );
        assert_eq!(decode(b"\x01", 0), Err(DecodeError::UnknownOpcode(1)));
        assert_eq!(
            decode(b"Sabc\n", 0).unwrap_err(),
            DecodeError::BadOperand("STRING is not quoted")
        );
        assert_eq!(
            decode(b"\x8e\xff\xff\xff\xff\xff\xff\xff\xff", 0),
            Err(DecodeError::Truncated)
        );
        assert_eq!(decode(b"", 0), Err(DecodeError::Truncated));
    }
}
