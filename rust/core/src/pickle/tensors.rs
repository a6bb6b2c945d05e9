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
