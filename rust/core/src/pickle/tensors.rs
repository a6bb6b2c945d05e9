//! The tensor table of a checkpoint pickle: loader-style names for every tensor the root object holds,
//! and each tensor's absolute place in the file.

use super::reader::{ArrayRef, Id, Obj, Run, TensorRef};
use crate::tensor::TensorInfo;

/// Most container nodes the name walk visits (shared sub-objects could otherwise blow up).
const MAX_VISITS: usize = 4_000_000;
/// Deepest nesting the name walk follows.
const MAX_DEPTH: usize = 64;

/// Every tensor reachable from the root with its name: the inner dict when the root has a
/// `state_dict` dict (as loaders do), other nesting joined with `.`, list items by index.
pub fn named_tensors<'r>(run: &'r Run) -> Vec<(String, &'r TensorRef)> {
    named(run, |o| match o {
        Obj::Tensor(t) => Some(&**t),
        _ => None,
    })
}

/// Every numpy array reachable from the root, named as [`named_tensors`] names tensors.
pub fn named_arrays<'r>(run: &'r Run) -> Vec<(String, &'r ArrayRef)> {
    named(run, |o| match o {
        Obj::Array(a) => Some(&**a),
        _ => None,
    })
}

/// The values `pick` accepts, with their names, walking from the root (or its `state_dict`).
fn named<'r, T>(run: &'r Run, pick: impl Fn(&'r Obj) -> Option<T>) -> Vec<(String, T)> {
    let mut out = Vec::new();
    let Some(mut root) = run.root else {
        return out;
    };
    if let Obj::Dict(pairs) = run.get(root) {
        let inner = pairs.iter().find(|(k, v)| {
            matches!(run.get(*k), Obj::Str(s) if s == "state_dict")
                && matches!(run.get(*v), Obj::Dict(_))
        });
        if let Some((_, v)) = inner {
            root = *v;
        }
    }
    let mut todo: Vec<(Id, String, usize)> = vec![(root, String::new(), 0)];
    let mut visits = 0usize;
    while let Some((id, name, depth)) = todo.pop() {
        visits += 1;
        if visits > MAX_VISITS {
            break;
        }
        let join = |k: &str| {
            if name.is_empty() {
                k.to_string()
            } else {
                format!("{name}.{k}")
            }
        };
        let obj = run.get(id);
        if let Some(v) = pick(obj) {
            out.push((name, v));
            continue;
        }
        match obj {
            Obj::Dict(pairs) if depth < MAX_DEPTH => {
                for (k, v) in pairs.iter().rev() {
                    if let Some(k) = key_text(run.get(*k)) {
                        todo.push((*v, join(&k), depth + 1));
                    }
                }
            }
            Obj::List(items) | Obj::Tuple(items) if depth < MAX_DEPTH => {
                for (i, v) in items.iter().enumerate().rev() {
                    todo.push((*v, join(&i.to_string()), depth + 1));
                }
            }
            _ => {}
        }
    }
    out
}

/// Most top-level scalars kept as extras (a checkpoint has a handful: `epoch`, `global_step`, ...).
pub const MAX_EXTRAS: usize = 64;
/// Longest extra name kept, in bytes (longer ones are left out).
pub const MAX_EXTRA_KEY: usize = 256;
/// Longest extra string value kept, in bytes (longer ones are left out).
pub const MAX_EXTRA_TEXT: usize = 4096;

/// The scalars next to the state dict in the root dict (`epoch`, `global_step`,
/// `pytorch-lightning_version`, ...), in pickle order, as text: ints in decimal, floats as the
/// shortest decimal that reads back the same value (`nan`, `inf`, `-inf` when not finite), bools
/// `true`/`false`, strings as they are.
/// Only string keys and int, float, bool or string values of the root dict itself; at most
/// [`MAX_EXTRAS`], names up to [`MAX_EXTRA_KEY`] bytes, strings up to [`MAX_EXTRA_TEXT`] bytes.
pub fn scalar_extras(run: &Run) -> Vec<(String, String)> {
    let Some(Obj::Dict(pairs)) = run.root.map(|r| run.get(r)) else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in pairs {
        let Obj::Str(key) = run.get(*k) else {
            continue;
        };
        let text = match run.get(*v) {
            Obj::Int(i) => i.to_string(),
            Obj::Bool(b) => b.to_string(),
            Obj::Float(f) if f.is_nan() => "nan".into(),
            Obj::Float(f) if f.is_infinite() => if *f > 0.0 { "inf" } else { "-inf" }.into(),
            Obj::Float(f) => {
                serde_json::Number::from_f64(*f).map_or_else(|| f.to_string(), |n| n.to_string())
            }
            Obj::Str(s) if s.len() <= MAX_EXTRA_TEXT => s.to_string(),
            _ => continue,
        };
        if key.len() > MAX_EXTRA_KEY {
            continue;
        }
        // a key set twice keeps its last value, as unpickling the dict would
        if let Some(i) = out.iter().position(|(k, _)| k == key.as_ref()) {
            out[i].1 = text;
        } else if out.len() < MAX_EXTRAS {
            out.push((key.to_string(), text));
        }
    }
    out
}

fn key_text(o: &Obj) -> Option<String> {
    match o {
        Obj::Str(s) => Some(s.to_string()),
        Obj::Int(v) => Some(v.to_string()),
        Obj::Bool(b) => Some(if *b { "True" } else { "False" }.to_string()),
        _ => None,
    }
}

/// Places a tensor in the file given where its storage's bytes start and how many there are.
pub fn place(
    name: &str,
    t: &TensorRef,
    storage_start: u64,
    storage_bytes: u64,
) -> Result<TensorInfo, String> {
    let dtype = t.dtype.ok_or_else(|| {
        format!(
            "{name}: element type of {} is not supported",
            t.storage.class
        )
    })?;
    let elem = dtype.bits() / 8;
    let overflow = || format!("{name}: shape {:?} overflows", t.shape);
    let numel = t
        .shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .ok_or_else(overflow)?;
    let extent = if numel == 0 {
        0
    } else {
        t.shape
            .iter()
            .zip(&t.stride)
            .try_fold(1u64, |a, (&d, &s)| {
                (d - 1).checked_mul(s).and_then(|x| x.checked_add(a))
            })
            .ok_or_else(overflow)?
    };
    let first = t
        .storage
        .view_offset
        .checked_add(t.offset)
        .ok_or_else(overflow)?;
    let need = first
        .checked_add(extent)
        .and_then(|e| e.checked_mul(elem))
        .ok_or_else(overflow)?;
    if need > storage_bytes {
        return Err(format!(
            "{name}: needs {need} bytes of storage {} which holds {storage_bytes}",
            t.storage.key
        ));
    }
    let contiguous = {
        let mut expect = 1u64;
        let mut ok = true;
        for (&d, &s) in t.shape.iter().zip(&t.stride).rev() {
            if d != 1 && s != expect {
                ok = false;
                break;
            }
            expect = expect.saturating_mul(d);
        }
        ok || numel == 0
    };
    Ok(TensorInfo {
        name: name.to_string(),
        dtype,
        shape: t.shape.clone(),
        start: storage_start + first * elem,
        len: numel * elem,
        strides: (!contiguous).then(|| t.stride.clone()),
    })
}

/// Places a numpy array whose raw bytes lie in the pickle buffer at `base` + its data offset.
pub fn place_array(name: &str, a: &ArrayRef, base: u64) -> Result<TensorInfo, String> {
    let descr = a.descr.as_deref().unwrap_or("?");
    let dtype = crate::npy::dtype_of(descr)
        .ok_or_else(|| format!("{name}: numpy element type {descr} is not supported"))?;
    let (at, len) = a.data.ok_or_else(|| {
        format!(
            "{name}: the array's bytes are encoded in the pickle (protocol 2), not stored as is"
        )
    })?;
    let numel = a
        .shape
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("{name}: shape {:?} overflows", a.shape))?;
    if numel.checked_mul(dtype.bits() / 8) != Some(len) {
        return Err(format!(
            "{name}: shape {:?} of {descr} needs {} bytes, the pickle holds {len}",
            a.shape,
            numel.saturating_mul(dtype.bits() / 8)
        ));
    }
    Ok(TensorInfo {
        name: name.to_string(),
        dtype,
        shape: a.shape.clone(),
        start: base + at as u64,
        len,
        strides: crate::npy::fortran_strides(&a.shape, a.fortran),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::Dtype;
    use crate::pickle::reader::StorageRef;

    fn t(shape: Vec<u64>, stride: Vec<u64>, offset: u64) -> TensorRef {
        TensorRef {
            storage: StorageRef {
                dtype: Some(Dtype::F16),
                class: "torch.HalfStorage".into(),
                key: "0".into(),
                numel: 100,
                view_offset: 0,
            },
            dtype: Some(Dtype::F16),
            offset,
            shape,
            stride,
        }
    }

    #[test]
    fn scalar_extras_are_the_root_dicts_scalars() {
        // pickle.dumps({'epoch': 3, 'global_step': 1000, 'lr': 1.5e-05,
        //   'pytorch-lightning_version': '1.6.0', 'flag': True, 'state_dict': {}, 'hparams': {'a': 1},
        //   'none': None, 'big': 2**70, 'nan': float('nan')}, protocol=2)
        let data = b"\x80\x02\x7d\x71\x00\x28\x58\x05\x00\x00\x00\x65\x70\x6f\x63\x68\x71\x01\x4b\x03\x58\x0b\x00\x00\x00\x67\x6c\x6f\x62\x61\x6c\x5f\x73\x74\x65\x70\x71\x02\x4d\xe8\x03\x58\x02\x00\x00\x00\x6c\x72\x71\x03\x47\x3e\xef\x75\x10\x4d\x55\x1d\x69\x58\x19\x00\x00\x00\x70\x79\x74\x6f\x72\x63\x68\x2d\x6c\x69\x67\x68\x74\x6e\x69\x6e\x67\x5f\x76\x65\x72\x73\x69\x6f\x6e\x71\x04\x58\x05\x00\x00\x00\x31\x2e\x36\x2e\x30\x71\x05\x58\x04\x00\x00\x00\x66\x6c\x61\x67\x71\x06\x88\x58\x0a\x00\x00\x00\x73\x74\x61\x74\x65\x5f\x64\x69\x63\x74\x71\x07\x7d\x71\x08\x58\x07\x00\x00\x00\x68\x70\x61\x72\x61\x6d\x73\x71\x09\x7d\x71\x0a\x58\x01\x00\x00\x00\x61\x71\x0b\x4b\x01\x73\x58\x04\x00\x00\x00\x6e\x6f\x6e\x65\x71\x0c\x4e\x58\x03\x00\x00\x00\x62\x69\x67\x71\x0d\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x40\x58\x03\x00\x00\x00\x6e\x61\x6e\x71\x0e\x47\x7f\xf8\x00\x00\x00\x00\x00\x00\x75\x2e";
        let run = crate::pickle::reader::run(data, 0, crate::pickle::reader::Limits::default());
        let got = scalar_extras(&run);
        let want: Vec<(String, String)> = [
            ("epoch", "3"),
            ("global_step", "1000"),
            ("lr", "0.000015"),
            ("pytorch-lightning_version", "1.6.0"),
            ("flag", "true"),
            ("nan", "nan"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, want);
        // a root that is no dict (a bare list) has no extras
        let list = crate::pickle::reader::run(b"\x80\x02]q\x00K\x01a.", 0, Default::default());
        assert!(scalar_extras(&list).is_empty());
    }

    #[test]
    fn places_contiguous_and_strided() {
        let a = place("a", &t(vec![2, 3], vec![3, 1], 4), 1000, 200).unwrap();
        assert_eq!((a.start, a.len, a.strides.clone()), (1008, 12, None));
        let b = place("b", &t(vec![3, 2], vec![1, 3], 0), 1000, 200).unwrap();
        assert_eq!(b.strides, Some(vec![1, 3]));
        let c = place("c", &t(vec![1, 5], vec![77, 1], 0), 0, 200).unwrap();
        assert_eq!(c.strides, None);
        assert!(place("d", &t(vec![10, 10], vec![10, 1], 1), 0, 200).is_err());
        assert!(place("e", &t(vec![u64::MAX, 3], vec![3, 1], 0), 0, 200).is_err());
        let z = place("z", &t(vec![0, 4], vec![4, 1], 0), 0, 0).unwrap();
        assert_eq!(z.len, 0);
    }
}
