//! Writing safetensors headers as the reference writer lays them out (largest alignment first, then name).

use crate::dtype::Dtype;
use serde_json::Value;
use std::fmt;

/// One tensor of a file to write.
#[derive(Clone, Debug, PartialEq)]
pub struct OutTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
}

impl OutTensor {
    /// Bytes this tensor's elements take, or `None` when they overflow or do not fill whole bytes.
    pub fn nbytes(&self) -> Option<u64> {
        let bits = self
            .shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))?
            .checked_mul(self.dtype.bits())?;
        bits.is_multiple_of(8).then_some(bits / 8)
    }
}

/// Why a header cannot be written.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteError {
    /// Two tensors with one name.
    DuplicateName(String),
    /// A tensor whose size overflows or is not whole bytes.
    BadSize(String),
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::DuplicateName(n) => write!(f, "two output tensors are named {n}"),
            WriteError::BadSize(n) => {
                write!(f, "tensor {n}: its size overflows or is not whole bytes")
            }
        }
    }
}

/// A serialized header: the padded JSON and each tensor's `(begin, end)` in the data region, in input order.
pub struct Serialized {
    pub json: Vec<u8>,
    pub offsets: Vec<(u64, u64)>,
    /// Input indices in the order their data follows the header.
    pub order: Vec<usize>,
}

impl Serialized {
    /// Bytes of the data region.
    pub fn data_len(&self) -> u64 {
        self.offsets.iter().map(|(_, e)| *e).max().unwrap_or(0)
    }
}

/// Serializes a header: `__metadata__` first (pairs in the order given), then the tensors in the reference
/// writer's data order, compact JSON padded with spaces to a multiple of 8 bytes.
pub fn serialize_header(
    tensors: &[OutTensor],
    metadata: Option<&[(String, String)]>,
) -> Result<Serialized, WriteError> {
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&tensors[a], &tensors[b]);
        y.dtype
            .writer_rank()
            .cmp(&x.dtype.writer_rank())
            .then_with(|| x.name.cmp(&y.name))
    });
    let mut names = rustc_hash::FxHashSet::default();
    if let Some(t) = tensors.iter().find(|t| !names.insert(t.name.as_str())) {
        return Err(WriteError::DuplicateName(t.name.clone()));
    }
    let quote = |s: &str| Value::String(s.to_string()).to_string();
    let mut json = String::from("{");
    if let Some(meta) = metadata {
        json.push_str("\"__metadata__\":{");
        for (i, (k, v)) in meta.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            json.push_str(&quote(k));
            json.push(':');
            json.push_str(&quote(v));
        }
        json.push('}');
    }
    let mut offsets = vec![(0, 0); tensors.len()];
    let mut pos = 0u64;
    for (n, &i) in order.iter().enumerate() {
        let t = &tensors[i];
        let size = t
            .nbytes()
            .ok_or_else(|| WriteError::BadSize(t.name.clone()))?;
        offsets[i] = (pos, pos + size);
        if n > 0 || metadata.is_some() {
            json.push(',');
        }
        let shape: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
        json.push_str(&format!(
            "{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
            quote(&t.name),
            t.dtype,
            shape.join(","),
            pos,
            pos + size
        ));
        pos += size;
    }
    json.push('}');
    let mut json = json.into_bytes();
    json.resize(json.len().next_multiple_of(8), b' ');
    Ok(Serialized {
        json,
        offsets,
        order,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safetensors::{header_len, parse_header};
    use proptest::prelude::*;

    fn file(tensors: &[OutTensor], meta: Option<&[(String, String)]>) -> (Serialized, Vec<u8>) {
        let s = serialize_header(tensors, meta).unwrap();
        let mut f = (s.json.len() as u64).to_le_bytes().to_vec();
        f.extend_from_slice(&s.json);
        f.resize(f.len() + s.data_len() as usize, 0);
        (s, f)
    }

    #[test]
    fn layout_is_the_reference_writers() {
        let t = |name: &str, dtype, shape: &[u64]| OutTensor {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
        };
        let ts = [
            t("b", Dtype::F16, &[2]),
            t("a", Dtype::F16, &[3]),
            t("c", Dtype::I64, &[1]),
            t("d", Dtype::F32, &[1]),
        ];
        let meta = [("k".to_string(), "v\"é".to_string())];
        let s = serialize_header(&ts, Some(&meta)).unwrap();
        let text = String::from_utf8(s.json.clone()).unwrap();
        assert_eq!(
            text.trim_end(),
            r#"{"__metadata__":{"k":"v\"é"},"c":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},"d":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},"a":{"dtype":"F16","shape":[3],"data_offsets":[12,18]},"b":{"dtype":"F16","shape":[2],"data_offsets":[18,22]}}"#
        );
        assert_eq!(s.json.len() % 8, 0);
        assert_eq!(s.order, vec![2, 3, 1, 0]);
        let dup = [
            t("a", Dtype::U8, &[1]),
            t("b", Dtype::U8, &[1]),
            t("a", Dtype::F64, &[2]),
        ];
        assert_eq!(
            serialize_header(&dup, None).err(),
            Some(WriteError::DuplicateName("a".into()))
        );
    }

    fn tensor() -> impl Strategy<Value = OutTensor> {
        (
            "[a-z_.]{1,12}|[^\"]{1,4}",
            prop::sample::select(Dtype::ALL.to_vec()),
            prop::collection::vec(0u64..5, 0..4),
        )
            .prop_map(|(name, dtype, shape)| OutTensor { name, dtype, shape })
            .prop_filter("whole bytes", |t| t.nbytes().is_some())
    }

    proptest! {
        #[test]
        fn parse_of_write_is_the_table(
            tensors in prop::collection::btree_map("[a-z_.]{1,12}|[^\"]{1,4}", tensor(), 0..12),
            meta in prop::option::of(prop::collection::btree_map(".{0,6}", ".{0,6}", 0..4)),
        ) {
            let tensors: Vec<OutTensor> = tensors
                .into_iter()
                .map(|(name, t)| OutTensor { name, ..t })
                .collect();
            let meta: Option<Vec<(String, String)>> = meta.map(|m| m.into_iter().collect());
            let (s, f) = file(&tensors, meta.as_deref());
            let n = header_len(&f, f.len() as u64).unwrap();
            let (h, findings) = parse_header(&f[8..8 + n as usize], f.len() as u64).unwrap();
            prop_assert!(findings.is_empty());
            prop_assert_eq!(h.header_len, s.json.len() as u64);
            let got: Vec<OutTensor> = h
                .tensors
                .iter()
                .map(|t| OutTensor { name: t.name.clone(), dtype: t.dtype, shape: t.shape.clone() })
                .collect();
            let want: Vec<OutTensor> = s.order.iter().map(|&i| tensors[i].clone()).collect();
            prop_assert_eq!(got, want);
            for t in &h.tensors {
                let i = tensors.iter().position(|x| x.name == t.name).unwrap();
                prop_assert_eq!(t.start - 8 - n, s.offsets[i].0);
            }
            let got_meta: Vec<(String, String)> = h
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            prop_assert_eq!(got_meta, meta.unwrap_or_default());
        }
    }
}
