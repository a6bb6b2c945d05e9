//! Per-component, per-block cosine similarity between models, from fingerprints or from all weights (`fastscan similar`).
//!
//! Both modes compute the same figure, the cosine of the raw weights over the tensors two models share
//! (same component, canonical name and element count), per merge block, per component and overall;
//! the fingerprint mode over the sampled elements, the exact mode ([`exact`]) over every element, so
//! the estimate can be checked. Contract in docs/lineage.md.

use crate::classify::Role;
use crate::fingerprint::{self, Fingerprint};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Schema of `fastscan similar --json`.
pub const SCHEMA: &str = "fastscan.similar/1";

/// Sums over shared elements of one (component, block): `[Σab, Σaa, Σbb]`.
pub type Stats = BTreeMap<(String, String), [f64; 3]>;

/// One tensor of a decoded fingerprint.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub comp: String,
    pub name: String,
    pub n: u64,
    pub block: String,
    /// Range of this tensor's samples in [`Sampled::values`].
    pub off: usize,
    pub len: usize,
}

/// A model's decoded fingerprint: tensors sorted by (component, name), samples in one vector.
#[derive(Clone, Debug, Default)]
pub struct Sampled {
    pub tensors: Vec<Tensor>,
    pub values: Vec<f64>,
}

impl Sampled {
    /// Decodes a fingerprint; `Err` names what is wrong with it.
    pub fn new(fp: &Fingerprint) -> Result<Sampled, String> {
        if fp.version != fingerprint::VERSION {
            return Err(format!(
                "fingerprint version {:?}, this fastscan reads {:?}",
                fp.version,
                fingerprint::VERSION
            ));
        }
        let mut s = Sampled::default();
        for (comp, cp) in &fp.components {
            for (name, n, block, vals) in cp.decode()?.tensors {
                s.tensors.push(Tensor {
                    comp: comp.clone(),
                    name,
                    n,
                    block,
                    off: s.values.len(),
                    len: vals.len(),
                });
                s.values.extend_from_slice(&vals);
            }
        }
        Ok(s)
    }

    /// Samples of tensor `t`.
    pub fn of(&self, t: &Tensor) -> &[f64] {
        &self.values[t.off..t.off + t.len]
    }

    /// Pairs of tensors `a` and `b` share (same component, name and element count), in order.
    pub fn shared<'a>(&'a self, b: &'a Sampled) -> Vec<(&'a Tensor, &'a Tensor)> {
        let key = |t: &Tensor| (t.comp.clone(), t.name.clone());
        let mut out = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < self.tensors.len() && j < b.tensors.len() {
            let (x, y) = (&self.tensors[i], &b.tensors[j]);
            match (x.comp.as_str(), x.name.as_str()).cmp(&(y.comp.as_str(), y.name.as_str())) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    if x.n == y.n {
                        out.push((x, y));
                    }
                    debug_assert_eq!(key(x), key(y));
                    i += 1;
                    j += 1;
                }
            }
        }
        out
    }

    /// Per (component, block) sums over the samples `self` and `b` share.
    pub fn stats(&self, b: &Sampled) -> Stats {
        self.stats_in(b, None)
    }

    /// [`Sampled::stats`] over one component only (`Some`) or all.
    pub fn stats_in(&self, b: &Sampled, scope: Option<&str>) -> Stats {
        let mut st = Stats::new();
        for (x, y) in self.shared(b) {
            if scope.is_some_and(|s| x.comp != s) {
                continue;
            }
            let e = st.entry((x.comp.clone(), x.block.clone())).or_default();
            for (p, q) in self.of(x).iter().zip(b.of(y)) {
                e[0] += p * q;
                e[1] += p * p;
                e[2] += q * q;
            }
        }
        st
    }
}

/// Cosine from `[Σab, Σaa, Σbb]` (0 when either side is all zeros).
pub fn cosine(s: &[f64; 3]) -> f64 {
    let d = (s[1] * s[2]).sqrt();
    if d > 0.0 {
        (s[0] / d).clamp(-1.0, 1.0)
    } else {
        0.0
    }
}

fn add(a: &mut [f64; 3], b: &[f64; 3]) {
    for k in 0..3 {
        a[k] += b[k];
    }
}

fn round(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// The JSON of one pair: overall cosine, per component overall and per block.
pub fn pair_json(a: &str, b: &str, st: &Stats) -> Value {
    let mut overall = [0.0; 3];
    let mut comps: BTreeMap<&str, ([f64; 3], Map<String, Value>)> = BTreeMap::new();
    for ((comp, block), s) in st {
        add(&mut overall, s);
        let c = comps.entry(comp).or_default();
        add(&mut c.0, s);
        c.1.insert(block.clone(), json!(round(cosine(s))));
    }
    let comps: Map<String, Value> = comps
        .into_iter()
        .map(|(c, (s, blocks))| {
            (
                c.to_string(),
                json!({"similarity": round(cosine(&s)), "blocks": blocks}),
            )
        })
        .collect();
    json!({"a": a, "b": b, "similarity": round(cosine(&overall)), "components": comps})
}

/// The `fastscan.similar/1` document for `models` (path, arch) and the stats of every pair.
pub fn document(
    method: &str,
    models: &[(String, String)],
    pairs: &[(usize, usize, Stats)],
) -> Value {
    json!({
        "schema": SCHEMA,
        "method": method,
        "models": models.iter().map(|(p, a)| json!({"path": p, "arch": a})).collect::<Vec<_>>(),
        "pairs": pairs.iter().map(|(i, j, st)| pair_json(&models[*i].0, &models[*j].0, st)).collect::<Vec<_>>(),
    })
}

/// Elements decoded per read in the exact mode.
const EXACT_CHUNK: u64 = 1 << 20;

/// One file's tensor in the exact mode.
struct Source<'a> {
    path: &'a Path,
    file: &'a std::fs::File,
    t: crate::tensor::TensorInfo,
}

/// Exact per-pair stats over every element of every shared tensor; each file is read once.
pub fn exact(paths: &[&Path]) -> Result<Vec<(usize, usize, Stats)>, String> {
    // (component, canonical name) -> per file, its tensor
    let files: Vec<std::fs::File> = paths
        .iter()
        .map(|p| std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display())))
        .collect::<Result<_, _>>()?;
    let mut keyed: BTreeMap<(String, String), Vec<(usize, Source)>> = BTreeMap::new();
    for (f, path) in paths.iter().enumerate() {
        let table =
            crate::table::open_table(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for (t, role) in table.tensors.iter().zip(&table.class.roles) {
            let Role::Component { name, prefix_len } = role else {
                continue;
            };
            if crate::values::element_size(t.dtype).is_none() {
                continue;
            }
            let canonical = t.name.get(*prefix_len..).unwrap_or(&t.name).to_string();
            keyed
                .entry((name.to_string(), canonical))
                .or_default()
                .push((
                    f,
                    Source {
                        path,
                        file: &files[f],
                        t: t.clone(),
                    },
                ));
        }
    }
    let mut pairs: BTreeMap<(usize, usize), Stats> = BTreeMap::new();
    for ((comp, name), files) in keyed {
        let block = fingerprint::block_of(&comp, &name);
        let mut by_n: BTreeMap<u64, Vec<&Source>> = BTreeMap::new();
        let mut which: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for (f, s) in &files {
            by_n.entry(s.t.elements()).or_default().push(s);
            which.entry(s.t.elements()).or_default().push(*f);
        }
        for (n, group) in by_n {
            if group.len() < 2 {
                continue;
            }
            let ids = &which[&n];
            let mut sums = vec![[0.0f64; 3]; ids.len() * ids.len()];
            let mut at = 0;
            while at < n {
                let len = EXACT_CHUNK.min(n - at);
                let vals: Vec<Vec<f64>> = group
                    .iter()
                    .map(|s| read_elements(s, at, len))
                    .collect::<Result<_, _>>()?;
                for a in 0..ids.len() {
                    for b in a + 1..ids.len() {
                        let e = &mut sums[a * ids.len() + b];
                        for (p, q) in vals[a].iter().zip(&vals[b]) {
                            e[0] += p * q;
                            e[1] += p * p;
                            e[2] += q * q;
                        }
                    }
                }
                at += len;
            }
            for a in 0..ids.len() {
                for b in a + 1..ids.len() {
                    let st = pairs.entry((ids[a], ids[b])).or_default();
                    add(
                        st.entry((comp.clone(), block.clone())).or_default(),
                        &sums[a * ids.len() + b],
                    );
                }
            }
        }
    }
    let mut out = Vec::new();
    for i in 0..paths.len() {
        for j in i + 1..paths.len() {
            out.push((i, j, pairs.remove(&(i, j)).unwrap_or_default()));
        }
    }
    Ok(out)
}

/// Elements `[at, at + len)` (C order) of a tensor, decoded.
fn read_elements(s: &Source, at: u64, len: u64) -> Result<Vec<f64>, String> {
    let t = &s.t;
    let es = t.dtype.bits() / 8;
    let err = |e: std::io::Error| format!("{}: tensor {}: {e}", s.path.display(), t.name);
    let strides = t.strides.as_deref().filter(|st| st.len() == t.shape.len());
    let mut out = Vec::with_capacity(len as usize);
    match strides {
        None => {
            let mut buf = vec![0u8; (len * es) as usize];
            s.file
                .read_exact_at(&mut buf, t.start + at * es)
                .map_err(err)?;
            for c in buf.chunks_exact(es as usize) {
                out.push(fingerprint::decode(t.dtype, c).unwrap_or(0.0) as f64);
            }
        }
        Some(st) => {
            let mut b = vec![0u8; es as usize];
            for idx in at..at + len {
                let off = fingerprint::strided_offset(&t.shape, st, idx);
                s.file
                    .read_exact_at(&mut b, t.start + off * es)
                    .map_err(err)?;
                out.push(fingerprint::decode(t.dtype, &b).unwrap_or(0.0) as f64);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_json_aggregates_blocks_and_components() {
        let mut st = Stats::new();
        st.insert(("unet".into(), "IN00".into()), [1.0, 1.0, 1.0]);
        st.insert(("unet".into(), "M00".into()), [0.0, 1.0, 1.0]);
        st.insert(("vae".into(), "BASE".into()), [-2.0, 2.0, 2.0]);
        let v = pair_json("a", "b", &st);
        assert_eq!(v["components"]["unet"]["blocks"]["IN00"], 1.0);
        assert_eq!(v["components"]["unet"]["blocks"]["M00"], 0.0);
        assert_eq!(v["components"]["unet"]["similarity"], 0.5);
        assert_eq!(v["components"]["vae"]["similarity"], -1.0);
        // overall: (1 + 0 - 2) / sqrt(4 * 4)
        assert_eq!(v["similarity"], -0.25);
    }
}
