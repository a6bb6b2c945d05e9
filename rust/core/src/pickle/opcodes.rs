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
        b'I' => match c.line()? {
            b"00" => Op::Bool(false),
            b"01" => Op::Bool(true),
            t => parse_int_text(t)?,
        },
        b'J' => Op::Int(c.i32()? as i64),
        b'K' => Op::Int(c.u8()? as i64),
        b'L' => {
            let t = c.line()?;
            parse_int_text(t.strip_suffix(b"L").unwrap_or(t))?
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

fn parse_int_text(t: &[u8]) -> R<Op<'static>> {
    let t = ascii_trim(t);
    let s = std::str::from_utf8(t).map_err(|_| DecodeError::BadOperand("INT is not text"))?;
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
        return Err(DecodeError::BadOperand("INT is not a number"));
    }
    Ok(match s.replace('_', "").parse::<i64>() {
        Ok(v) => Op::Int(v),
        Err(_) => Op::BigInt,
    })
}

fn parse_index(t: &[u8]) -> R<u64> {
    let t = ascii_trim(t);
    std::str::from_utf8(t)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or(DecodeError::BadOperand("memo index is not a number"))
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
