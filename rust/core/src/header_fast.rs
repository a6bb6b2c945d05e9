//! The plain safetensors header read directly (no serde): what every writer produces, else `None`.
//!
//! Accepts only what serde_json reads the same way: an object of tensor entries with exactly the
//! fields `dtype`, `shape` and `data_offsets` (unsigned integers), and `__metadata__` as `null` or an
//! object of strings. Anything else (extra fields, other value types, duplicate fields, numbers with a
//! sign, fraction or exponent, control characters, trailing bytes, every error) returns `None`, and the
//! caller parses with serde_json, whose behaviour and messages the reference reader shares. Strings
//! with escapes are decoded by serde_json itself.

use crate::safetensors::{entry_problem, MetaPairs, Offsets, RawHeader, RawTensor};
use serde_json::Value;
use std::borrow::Cow;

/// Position of the first `"`, `\` or control character (below 0x20) in `b`, eight bytes at a time.
fn find_special(b: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while i + 8 <= b.len() {
        let x = u64::from_le_bytes(b[i..i + 8].try_into().expect("eight bytes"));
        let quote = x ^ (LO * b'"' as u64);
        let slash = x ^ (LO * b'\\' as u64);
        // A byte below n sets its high bit in (v - n) & !v; borrows only flag bytes above a true
        // match, so the lowest flagged byte is always a real one.
        let hits = ((quote.wrapping_sub(LO) & !quote)
            | (slash.wrapping_sub(LO) & !slash)
            | (x.wrapping_sub(LO * 0x20) & !x))
            & HI;
        if hits != 0 {
            return Some(i + (hits.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b[i..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map(|p| i + p)
}

/// A position in the header text.
struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// The next byte after JSON whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        let b = self.bytes();
        while let Some(&c) = b.get(self.at) {
            if !matches!(c, b' ' | b'\n' | b'\t' | b'\r') {
                return Some(c);
            }
            self.at += 1;
        }
        None
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.at += 1)
    }

    /// After an element of an object or array: `true` at `,`, `false` at `close` (both consumed).
    fn more(&mut self, close: u8) -> Option<bool> {
        match self.peek()? {
            b',' => {
                self.at += 1;
                Some(true)
            }
            c if c == close => {
                self.at += 1;
                Some(false)
            }
            _ => None,
        }
    }

    /// A string: borrowed when it has no escapes, else decoded by serde_json.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.eat(b'"')?;
        let start = self.at;
        let b = self.bytes();
        let mut escaped = false;
        loop {
            let j = self.at + find_special(&b[self.at..])?;
            match b[j] {
                b'"' => {
                    self.at = j + 1;
                    break;
                }
                b'\\' => {
                    escaped = true;
                    self.at = j + 2; // the escaped byte cannot end the string
                    if self.at > b.len() {
                        return None;
                    }
                }
                _ => return None, // a control character: serde_json refuses it
            }
        }
        if escaped {
            serde_json::from_str::<String>(&self.text[start - 1..self.at])
                .ok()
                .map(Cow::Owned)
        } else {
            Some(Cow::Borrowed(&self.text[start..self.at - 1]))
        }
    }

    /// An unsigned integer as JSON writes it (no sign, fraction, exponent or leading zero).
    fn uint(&mut self) -> Option<u64> {
        self.peek()?;
        let b = self.bytes();
        let start = self.at;
        let mut v: u64 = 0;
        while let Some(&c) = b.get(self.at).filter(|c| c.is_ascii_digit()) {
            v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
            self.at += 1;
        }
        let len = self.at - start;
        let plain = len > 0 && !(len > 1 && b[start] == b'0');
        (plain && !matches!(b.get(self.at), Some(b'.' | b'e' | b'E'))).then_some(v)
    }

    /// An array of unsigned integers, each handed to `each`.
    fn uints(&mut self, mut each: impl FnMut(u64)) -> Option<()> {
        self.eat(b'[')?;
        if self.peek()? == b']' {
            self.at += 1;
            return Some(());
        }
        loop {
            each(self.uint()?);
            if !self.more(b']')? {
                return Some(());
            }
        }
    }

    /// A tensor entry with exactly its three fields, in any order.
    fn tensor(&mut self) -> Option<RawTensor<'a>> {
        self.eat(b'{')?;
        let (mut dtype, mut shape, mut offsets) = (None, None, None);
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            match &*key {
                "dtype" if dtype.is_none() => dtype = Some(self.string()?),
                "shape" if shape.is_none() => {
                    let mut v = Vec::new();
                    self.uints(|d| v.push(d))?;
                    shape = Some(v);
                }
                "data_offsets" if offsets.is_none() => {
                    let mut o = Offsets {
                        first: [0; 2],
                        count: 0,
                    };
                    self.uints(|x| {
                        if o.count < 2 {
                            o.first[o.count] = x;
                        }
                        o.count += 1;
                    })?;
                    offsets = Some(o);
                }
                _ => return None,
            }
            if !self.more(b'}')? {
                break;
            }
        }
        Some(RawTensor {
            dtype: dtype?,
            shape: shape?,
            data_offsets: offsets?,
        })
    }

    /// `__metadata__`: `null`, or an object whose values are all strings.
    fn metadata(&mut self) -> Option<Option<MetaPairs>> {
        if self.peek()? == b'n' {
            let null = self.bytes()[self.at..].starts_with(b"null");
            self.at += 4;
            return null.then_some(None);
        }
        self.eat(b'{')?;
        let mut pairs = Vec::new();
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(Some(MetaPairs(pairs)));
        }
        loop {
            let k = self.string()?.into_owned();
            self.eat(b':')?;
            let v = self.string()?.into_owned();
            pairs.push((k, Value::String(v)));
            if !self.more(b'}')? {
                return Some(Some(MetaPairs(pairs)));
            }
        }
    }
}

/// The header's entries, when `text` has the plain shape; `None` sends it to serde_json.
pub(crate) fn parse(text: &str) -> Option<RawHeader<'_>> {
    let mut c = Cursor { text, at: 0 };
    c.eat(b'{')?;
    let mut metadata = None;
    let mut seen_meta = false;
    // A tensor entry takes well over 64 bytes of JSON.
    let mut entries: Vec<(String, RawTensor)> = Vec::with_capacity(text.len() / 64);
    if c.peek()? == b'}' {
        c.at += 1;
    } else {
        loop {
            let key = c.string()?;
            c.eat(b':')?;
            if key == "__metadata__" {
                if seen_meta {
                    return None;
                }
                seen_meta = true;
                metadata = c.metadata()?;
            } else {
                let t = c.tensor()?;
                entries.push((key.into_owned(), t));
            }
            if !c.more(b'}')? {
                break;
            }
        }
    }
    if c.peek().is_some() {
        return None; // trailing bytes
    }
    let problem = entries
        .iter()
        .enumerate()
        .find_map(|(i, (k, t))| entry_problem(k, t).map(|r| (i, r)));
    Some(RawHeader::assemble(metadata, entries, problem))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What serde_json makes of `text` through the same visitor (the reference path).
    fn by_serde(text: &str) -> Option<RawHeader<'_>> {
        serde_json::from_str(text).ok()
    }

    /// Everything a parse yields, comparable.
    #[allow(clippy::type_complexity)]
    fn flat(
        h: &RawHeader,
    ) -> (
        Option<Vec<(String, Value)>>,
        Vec<(String, String, Vec<u64>, [u64; 2], usize)>,
        Vec<String>,
        Option<(String, String, usize)>,
    ) {
        (
            h.metadata.as_ref().map(|m| m.0.clone()),
            h.tensors
                .iter()
                .map(|(k, t)| {
                    let o = t.data_offsets;
                    (
                        k.clone(),
                        t.dtype.to_string(),
                        t.shape.clone(),
                        o.first,
                        o.count,
                    )
                })
                .collect(),
            h.conflicting.clone(),
            h.problem.clone(),
        )
    }

    #[test]
    fn special_bytes_are_found_at_their_first_position() {
        for len in 0..40 {
            for at in 0..len {
                for c in [b'"', b'\\', 0x00, 0x1f] {
                    let mut b = vec![b'a'; len];
                    b[at] = c;
                    // bytes just above and below the special ones must not be taken for them
                    if at + 1 < len {
                        b[at + 1] = 0x21;
                    }
                    assert_eq!(find_special(&b), Some(at), "len {len} at {at} byte {c:#x}");
                }
                let mut b = vec![0x20u8; len];
                b[at] = 0x5b;
                assert_eq!(find_special(&b), None);
            }
        }
    }

    #[test]
    fn plain_headers_are_read_as_serde_reads_them() {
        let cases = [
            r#"{}"#,
            r#" { } "#,
            r#"{"__metadata__":null}"#,
            r#"{"__metadata__":{"format":"pt","a\"b":"x\\y\u00e9\n"},"w":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]}}"#,
            "{\n \"a\" : {\"shape\" : [ ] ,\t\"data_offsets\":[0,4],\"dtype\":\"F32\"},\r\n\"b\":{\"dtype\":\"Q9\",\"shape\":[1],\"data_offsets\":[4,8,9]}}",
            r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}}"#,
            r#"{"k\u00e9y\/":{"dtype":"U8","shape":[0],"data_offsets":[18446744073709551615]}}"#,
        ];
        for text in cases {
            let fast = parse(text).unwrap_or_else(|| panic!("fast path refused {text}"));
            let reference = by_serde(text).expect("serde reads it");
            assert_eq!(flat(&fast), flat(&reference), "{text}");
        }
    }

    #[test]
    fn everything_else_is_left_to_serde() {
        let cases = [
            r#"[]"#,
            r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"extra":1}}"#,
            r#"{"a":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
            r#"{"a":{"dtype":"U8","shape":[1]}}"#,
            r#"{"a":{"dtype":"U8","shape":[01],"data_offsets":[0,1]}}"#,
            r#"{"a":{"dtype":"U8","shape":[1.0],"data_offsets":[0,1]}}"#,
            r#"{"a":{"dtype":"U8","shape":[1e0],"data_offsets":[0,1]}}"#,
            r#"{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}}"#,
            r#"{"a":{"dtype":"U8","shape":[18446744073709551616],"data_offsets":[0,1]}}"#,
            r#"{"a":{"dtype":"U8","shape":[1,],"data_offsets":[0,1]}}"#,
            r#"{"__metadata__":{"a":1}}"#,
            r#"{"__metadata__":{},"__metadata__":{}}"#,
            r#"{"__metadata__":nul}"#,
            r#"{"__metadata__":{"a":"b"}} x"#,
            "{\"a\u{1}\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
            r#"{"a\q":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
            r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},}"#,
            r#"{"a""#,
            r#"{"a\"#,
        ];
        for text in cases {
            assert!(parse(text).is_none(), "{text}");
        }
    }

    /// Property: on mutated headers, whatever the fast path accepts, serde_json reads identically.
    #[test]
    fn fast_path_agrees_with_serde_on_generated_inputs() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // Pieces spliced into the headers, separated by `|`.
        const PIECES: &str = "{|}|[|]|,|:|\"|\\|\\\"|\\u00e9|\\ud83d\\ude00|\\ud800| |\n|\t|0|00|-|1e2|.5|null|\"__metadata__\"|\"dtype\"|\"shape\"|\"data_offsets\"|\"F16\"|\u{1}|é|18446744073709551615|9";
        let pieces: Vec<&str> = PIECES.split('|').collect();
        let mut accepted = 0;
        for case in 0..20_000 {
            let mut h = String::from("{");
            if next() % 3 == 0 {
                h.push_str(r#""__metadata__":{"k":"v","k2":"w\"x"},"#);
            }
            let n = 1 + next() % 4;
            for i in 0..n {
                if i > 0 {
                    h.push(',');
                }
                let (s, e) = (next() % 50, next() % 50);
                h.push_str(&format!(
                    r#""t{}":{{"dtype":"U8","shape":[{}],"data_offsets":[{s},{e}]}}"#,
                    next() % 3,
                    next() % 9
                ));
            }
            h.push('}');
            let mut bytes = h.into_bytes();
            for _ in 0..next() % 3 {
                let at = (next() as usize) % (bytes.len() + 1);
                match next() % 3 {
                    0 => {
                        let p = pieces[(next() as usize) % pieces.len()];
                        bytes.splice(at..at, p.bytes()).for_each(drop);
                    }
                    1 if at < bytes.len() => drop(bytes.remove(at)),
                    _ if at < bytes.len() => bytes[at] = b" ,:[]{}\"0a\\"[(next() % 11) as usize],
                    _ => {}
                }
            }
            let Ok(text) = std::str::from_utf8(&bytes) else {
                continue;
            };
            if let Some(fast) = parse(text) {
                accepted += 1;
                let reference = by_serde(text).unwrap_or_else(|| {
                    panic!("case {case}: serde refuses what the fast path read: {text}")
                });
                assert_eq!(flat(&fast), flat(&reference), "case {case}: {text}");
            }
        }
        assert!(
            accepted > 5_000,
            "only {accepted} cases exercised the fast path"
        );
    }
}
