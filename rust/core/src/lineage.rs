//! A library's lineage from fingerprints: same weights, nearest models, merge recipes, blended VAEs, families (docs/lineage.md).
//!
//! Everything here works on fingerprints only (never on the files): pair similarities over the
//! shared samples, then for each model a least-squares fit over the few most similar other models.
//! A fit is reported only when it explains the model up to rounding; otherwise `merge` is null.

use crate::fingerprint::Fingerprint;
use crate::kind::{Arch, Kind};
use crate::similarity::{cosine, Sampled};
use rayon::prelude::*;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Schema of `fastscan lineage --json`.
pub const SCHEMA: &str = "fastscan.lineage/1";
/// Candidate parents tried per model: the most similar ones that are not merges themselves...
const CANDIDATES: usize = 8;
/// ...and the most similar merges.
const MERGE_CANDIDATES: usize = 2;
/// Most similar models (not merges) among which the candidates are chosen ([`pick`]).
const POOL: usize = 24;
/// Most parents a weighted sum is fitted with.
const MAX_PARENTS: usize = 3;
/// Share of the model's difference from its nearest candidate a recipe must explain.
pub const FIT_MIN: f64 = 0.95;
/// Most residual a recipe may leave, in units of the model's own rounding noise (each sample rounded
/// once to the grid its values lie on: bf16, fp16 or f32). A merge computed from its stored parents
/// and stored once leaves about 1; computed in the stored dtype (each product and the sum rounded)
/// about 2 to 3. A recipe that only explains most of the distance to the nearest candidate (a 90/10
/// merge fitted with a wrong second parent: any model near the base shrinks the first parent's
/// delta by 10%) leaves far more.
pub const NOISE_MAX: f64 = 4.0;
/// Least noise floor, relative to the model's squared norm (values exact in f32 still leave the
/// error of the f64 arithmetic of the fit).
const FLOOR_MIN: f64 = 1e-10;
/// Smallest weight a parent of a weighted sum may have.
const WEIGHT_MIN: f64 = 0.02;
/// How far weights may sum from 1 (and add-difference terms from their pattern).
const SUM_TOL: f64 = 0.05;
/// Similarity at or above which two comparable models are one family.
pub const FAMILY_MIN: f64 = 0.5;
/// Share of each model's samples two models must share to be compared at all.
const COMPARABLE: f64 = 0.5;
/// Models listed under `nearest`.
const NEAREST: usize = 5;
/// Least similarity listed under `nearest`: below it the cosine of independent models is sampling noise.
pub const NEAR_MIN: f64 = 0.1;
/// Kinds of file lineage covers (reports of other kinds are left out of it).
pub const KINDS: [Kind; 4] = [Kind::Checkpoint, Kind::Unet, Kind::Vae, Kind::TextEncoder];
/// Metadata keys that declare how a model was made.
const DECLARED: [&str; 7] = [
    "sd_merge_recipe",
    "sd_merge_models",
    "mecha_recipe",
    "ss_sd_model_name",
    "ss_base_model_version",
    "ss_sd_model_hash",
    "ss_new_sd_model_hash",
];

/// One model of the library.
pub struct Model {
    pub path: String,
    pub arch: Arch,
    pub kind: Kind,
    pub metadata: Map<String, Value>,
    pub sampled: Sampled,
    /// File size in bytes (0 when the report has none): the smaller of two twins names them.
    pub size: u64,
}

impl Model {
    /// A model from its scan report (with a fingerprint); `Ok(None)` for files lineage does not cover.
    pub fn from_report(r: &Value) -> Result<Option<Model>, String> {
        let kind = Kind::deserialize(&r["kind"]).unwrap_or_default();
        if !KINDS.contains(&kind) || r["fingerprint"].is_null() {
            return Ok(None);
        }
        let path = r["path"].as_str().unwrap_or_default().to_string();
        let fp: Fingerprint = serde_json::from_value(r["fingerprint"].clone())
            .map_err(|e| format!("{path}: fingerprint: {e}"))?;
        let sampled = Sampled::new(&fp).map_err(|e| format!("{path}: {e}"))?;
        if sampled.tensors.is_empty() {
            return Ok(None);
        }
        Ok(Some(Model {
            arch: Arch::deserialize(&r["arch"]).unwrap_or_default(),
            kind,
            metadata: r["metadata"].as_object().cloned().unwrap_or_default(),
            size: r["size"].as_u64().unwrap_or(0),
            path,
            sampled,
        }))
    }

    fn samples_in(&self, scope: Option<&str>) -> usize {
        self.sampled
            .tensors
            .iter()
            .filter(|t| scope.is_none_or(|s| t.comp == s))
            .map(|t| t.len)
            .sum()
    }

    /// True when `o` has every tensor of this model in `scope` (same name and element count).
    fn covered_by(&self, o: &Model, scope: Option<&str>) -> bool {
        let inside = |t: &crate::similarity::Tensor| scope.is_none_or(|s| t.comp == s);
        let own = self.sampled.tensors.iter().filter(|t| inside(t)).count();
        let shared = self
            .sampled
            .shared(&o.sampled)
            .into_iter()
            .filter(|(t, _)| inside(t))
            .count();
        own > 0 && shared == own
    }

    /// A digest of the tensors (names, sizes) and values within `scope`: equal for the same weights.
    fn key(&self, scope: Option<&str>) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        for t in &self.sampled.tensors {
            if scope.is_none_or(|s| t.comp == s) {
                h.update(t.comp.as_bytes());
                h.update(&[0]);
                h.update(t.name.as_bytes());
                h.update(&[0]);
                h.update(&t.n.to_le_bytes());
                for v in self.sampled.of(t) {
                    h.update(&v.to_bits().to_le_bytes());
                }
            }
        }
        *h.finalize().as_bytes()
    }
}

/// A fitted recipe.
struct Merge {
    method: &'static str,
    parents: Vec<(usize, f64)>,
    base: Option<usize>,
    blocks: Option<BTreeMap<String, Vec<(usize, f64)>>>,
    fit: f64,
}

/// Gram matrices of a target (index 0) and its candidates, per block and in total.
struct Gram {
    blocks: Vec<(String, Vec<Vec<f64>>, usize)>,
    total: Vec<Vec<f64>>,
    /// The target's rounding noise ([`rounding_noise`]): what a recipe's residual is compared with.
    floor: f64,
}

/// Mantissa bits of the grid all `values` lie on: 7 (bf16), 10 (fp16) or 23 (f32).
fn grid_bits(values: &[f64]) -> u32 {
    let all = |on: fn(f32) -> bool| values.iter().all(|&v| on(v as f32));
    if all(|f| half::bf16::from_f32(f).to_f32() == f) {
        7
    } else if all(|f| half::f16::from_f32(f).to_f32() == f) {
        10
    } else {
        23
    }
}

/// Expected squared error of rounding each of `values` once to the grid they lie on: `Σ ulp²/12`
/// (bf16, fp16 or f32, whichever holds every value; fp16 subnormals have the ulp 2⁻²⁴), at least
/// [`FLOOR_MIN`] of their squared norm.
fn rounding_noise(values: &[f64]) -> f64 {
    let bits = grid_bits(values);
    let min_exp = if bits == 10 { -14 } else { -126 };
    let mut noise = 0.0;
    let mut norm = 0.0;
    for &v in values {
        norm += v * v;
        let a = (v as f32).abs();
        let e = if a > 0.0 {
            (((a.to_bits() >> 23) & 0xFF) as i32 - 127).max(min_exp)
        } else {
            min_exp
        };
        let ulp = 2f64.powi(e - bits as i32);
        noise += ulp * ulp / 12.0;
    }
    noise.max(FLOOR_MIN * norm)
}

impl Gram {
    /// Over the target's tensors in `scope`; `None` when a candidate lacks one of them.
    fn new(t: &Model, cands: &[&Model], scope: Option<&str>) -> Option<Gram> {
        let own: Vec<&crate::similarity::Tensor> = t
            .sampled
            .tensors
            .iter()
            .filter(|x| scope.is_none_or(|s| x.comp == s))
            .collect();
        let mut vecs: Vec<Vec<&[f64]>> = vec![own.iter().map(|x| t.sampled.of(x)).collect()];
        for c in cands {
            let shared: Vec<_> = t
                .sampled
                .shared(&c.sampled)
                .into_iter()
                .filter(|(x, _)| scope.is_none_or(|s| x.comp == s))
                .collect();
            if shared.len() != own.len() {
                return None;
            }
            vecs.push(shared.iter().map(|(_, y)| c.sampled.of(y)).collect());
        }
        let k = vecs.len();
        let mut index: BTreeMap<&str, usize> = BTreeMap::new();
        let mut blocks: Vec<(String, Vec<Vec<f64>>, usize)> = Vec::new();
        for (ti, x) in own.iter().enumerate() {
            let b = *index.entry(&x.block).or_insert_with(|| {
                blocks.push((x.block.clone(), vec![vec![0.0; k]; k], 0));
                blocks.len() - 1
            });
            let g = &mut blocks[b];
            g.2 += x.len;
            for i in 0..k {
                for j in i..k {
                    let d: f64 = vecs[i][ti]
                        .iter()
                        .zip(vecs[j][ti])
                        .map(|(p, q)| p * q)
                        .sum();
                    g.1[i][j] += d;
                }
            }
        }
        let mut total = vec![vec![0.0; k]; k];
        for (_, g, _) in &mut blocks {
            for i in 0..k {
                for j in i..k {
                    g[j][i] = g[i][j];
                    total[i][j] += g[i][j];
                    total[j][i] = total[i][j];
                }
            }
        }
        blocks.sort_by(|a, b| a.0.cmp(&b.0));
        let own_values: Vec<f64> = own
            .iter()
            .flat_map(|x| t.sampled.of(x).iter().copied())
            .collect();
        Some(Gram {
            blocks,
            total,
            floor: rounding_noise(&own_values),
        })
    }
}

/// Least squares of the target (index 0) on candidates `s` (indices into the Gram): weights, residual.
fn fit(g: &[Vec<f64>], s: &[usize]) -> Option<(Vec<f64>, f64)> {
    let n = s.len();
    let scale = s.iter().map(|&i| g[i][i]).sum::<f64>() / n as f64;
    if scale <= 0.0 {
        return None;
    }
    let mut a: Vec<Vec<f64>> = s
        .iter()
        .map(|&i| {
            let mut row: Vec<f64> = s.iter().map(|&j| g[i][j]).collect();
            row.push(g[i][0]);
            row
        })
        .collect();
    for (i, row) in a.iter_mut().enumerate() {
        row[i] += scale * 1e-12; // ridge: identical candidates split evenly instead of failing
    }
    for c in 0..n {
        let p = (c..n).max_by(|&x, &y| a[x][c].abs().total_cmp(&a[y][c].abs()))?;
        a.swap(c, p);
        if a[c][c].abs() < scale * 1e-15 {
            return None;
        }
        for r in 0..n {
            if r != c {
                let f = a[r][c] / a[c][c];
                let pivot = a[c].clone();
                for (x, y) in a[r].iter_mut().zip(&pivot) {
                    *x -= f * y;
                }
            }
        }
    }
    let w: Vec<f64> = (0..n).map(|i| a[i][n] / a[i][i]).collect();
    let mut r = g[0][0];
    for (x, &i) in w.iter().zip(s) {
        r -= 2.0 * x * g[i][0];
        for (y, &j) in w.iter().zip(s) {
            r += x * y * g[i][j];
        }
    }
    Some((w, r.max(0.0)))
}

/// Every subset of `1..=k` of size `size`, in order.
fn subsets(k: usize, size: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    fn rec(start: usize, k: usize, size: usize, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if cur.len() == size {
            out.push(cur.clone());
            return;
        }
        for i in start..=k {
            cur.push(i);
            rec(i + 1, k, size, cur, out);
            cur.pop();
        }
    }
    rec(1, k, size, &mut cur, &mut out);
    out
}

/// Smallest squared distance of the target to one candidate (what a recipe must beat); `None` at 0.
fn nearest_distance(g: &[Vec<f64>]) -> Option<f64> {
    let d = (1..g.len())
        .map(|i| g[0][0] - 2.0 * g[0][i] + g[i][i])
        .fold(f64::INFINITY, f64::min);
    (d.is_finite() && d > 0.0).then_some(d)
}

/// How many of the subset `s` are merges themselves (`pen`, by Gram index): fewer is preferred.
fn penalty(pen: &[bool], s: &[usize]) -> usize {
    s.iter()
        .filter(|&&i| pen.get(i).copied().unwrap_or(false))
        .count()
}

/// True when `(pen_a, fit_a)` beats the best so far (fewer merges as parents, then a better fit).
fn better(pen_a: usize, fit_a: f64, best: Option<&(usize, Merge)>) -> bool {
    best.is_none_or(|(p, m)| pen_a < *p || (pen_a == *p && fit_a > m.fit))
}

/// The fewest parents (2, then 3) whose non-negative weights summing to 1 explain the target.
fn weighted_sum(gram: &Gram, pen: &[bool]) -> Option<Merge> {
    let g = &gram.total;
    let k = g.len() - 1;
    let reference = nearest_distance(g)?;
    let sums_to_one = |w: &[f64]| (w.iter().sum::<f64>() - 1.0).abs() <= SUM_TOL;
    for size in 2..=MAX_PARENTS.min(k) {
        let mut best: Option<(usize, Merge)> = None;
        for s in subsets(k, size) {
            let Some((w, r)) = fit(g, &s) else { continue };
            let f = 1.0 - r / reference;
            let p = penalty(pen, &s);
            if w.iter().all(|&x| x >= WEIGHT_MIN)
                && sums_to_one(&w)
                && f >= FIT_MIN
                && r <= NOISE_MAX * gram.floor
                && better(p, f, best.as_ref())
            {
                let m = Merge {
                    method: "weighted-sum",
                    parents: s.iter().copied().zip(w).collect(),
                    base: None,
                    blocks: None,
                    fit: f,
                };
                best = Some((p, m));
            }
        }
        if best.is_some() {
            return best.map(|b| b.1);
        }
    }
    None
}

/// The same parents fitted block by block, when their weights differ by block.
fn block_weighted(gram: &Gram, pen: &[bool]) -> Option<Merge> {
    let k = gram.total.len() - 1;
    let reference = nearest_distance(&gram.total)?;
    for size in 2..=MAX_PARENTS.min(k) {
        let mut best: Option<(usize, Merge)> = None;
        'subset: for s in subsets(k, size) {
            let mut blocks = BTreeMap::new();
            let mut resid = 0.0;
            let mut mean = vec![0.0; size];
            let mut counted = 0usize;
            let mut peak = vec![0.0f64; size];
            for (name, g, count) in &gram.blocks {
                let Some((w, r)) = fit(g, &s) else {
                    continue 'subset;
                };
                if w.iter().any(|&x| x < -WEIGHT_MIN)
                    || (w.iter().sum::<f64>() - 1.0).abs() > SUM_TOL
                {
                    continue 'subset;
                }
                resid += r;
                for (i, x) in w.iter().enumerate() {
                    mean[i] += x * *count as f64;
                    peak[i] = peak[i].max(*x);
                }
                counted += count;
                blocks.insert(name.clone(), s.iter().copied().zip(w).collect::<Vec<_>>());
            }
            let f = 1.0 - resid / reference;
            if f < FIT_MIN
                || resid > NOISE_MAX * gram.floor
                || peak.iter().any(|&p| p < WEIGHT_MIN)
                || counted == 0
            {
                continue;
            }
            let p = penalty(pen, &s);
            if better(p, f, best.as_ref()) {
                let parents = s
                    .iter()
                    .zip(&mean)
                    .map(|(&i, m)| (i, m / counted as f64))
                    .collect();
                let m = Merge {
                    method: "weighted-sum",
                    parents,
                    base: None,
                    blocks: Some(blocks),
                    fit: f,
                };
                best = Some((p, m));
            }
        }
        if best.is_some() {
            return best.map(|b| b.1);
        }
    }
    None
}

/// `A + a·(B − C)` over every triple of candidates, keeping only readings `accept` allows.
fn add_difference(gram: &Gram, accept: &dyn Fn(&Merge) -> bool) -> Option<Merge> {
    let g = &gram.total;
    let k = g.len() - 1;
    let reference = nearest_distance(g)?;
    let mut best: Option<Merge> = None;
    for s in subsets(k, 3) {
        let Some((w, r)) = fit(g, &s) else { continue };
        let f = 1.0 - r / reference;
        if f < FIT_MIN || r > NOISE_MAX * gram.floor {
            continue;
        }
        let role = |pred: &dyn Fn(f64) -> bool| (0..3).find(|&i| pred(w[i]));
        let Some(a) = role(&|x| (x - 1.0).abs() <= SUM_TOL) else {
            continue;
        };
        let others: Vec<usize> = (0..3).filter(|&i| i != a).collect();
        let (b, c) = if w[others[0]] > w[others[1]] {
            (others[0], others[1])
        } else {
            (others[1], others[0])
        };
        // the factor is A1111's multiplier, at most 1: a larger one is the same relation read
        // backwards (`B = C + (T − A)/a` makes any parent of an add-difference look like one)
        if w[b] < WEIGHT_MIN || w[b] > 1.0 + SUM_TOL || (w[b] + w[c]).abs() > SUM_TOL {
            continue;
        }
        let m = Merge {
            method: "add-difference",
            parents: vec![(s[a], 1.0), (s[b], (w[b] - w[c]) / 2.0)],
            base: Some(s[c]),
            blocks: None,
            fit: f,
        };
        if best.as_ref().is_none_or(|x| f > x.fit) && accept(&m) {
            best = Some(m);
        }
    }
    best
}

/// Up to [`CANDIDATES`] of `pool` (comparable models that have every tensor of `t`, most similar
/// first) as candidate parents of `t`: the nearest, then in turn the next most similar and the next
/// that explains most of what the nearest leaves (`⟨t − a, x − a⟩² / |x − a|²` for nearest `a`):
/// a 90/10 merge's second parent is far from the merge (further than many of its family) but
/// explains its difference from the first.
fn pick(t: &Model, pool: &[usize], models: &[Model]) -> Vec<usize> {
    let Some(&a) = pool.first() else {
        return Vec::new();
    };
    // dot products over t's tensors (every candidate has them all, in the same order)
    let dot = |x: &Model, y: &Model| -> f64 {
        t.sampled
            .shared(&x.sampled)
            .iter()
            .zip(t.sampled.shared(&y.sampled))
            .map(|((_, p), (_, q))| {
                x.sampled
                    .of(p)
                    .iter()
                    .zip(y.sampled.of(q))
                    .map(|(u, v)| u * v)
                    .sum::<f64>()
            })
            .sum()
    };
    let am = &models[a];
    let (ta, aa) = (dot(t, am), dot(am, am));
    let mut gains: Vec<(f64, usize)> = pool[1..]
        .iter()
        .map(|&j| {
            let x = &models[j];
            let ax = dot(am, x);
            let u = dot(t, x) - ta - ax + aa;
            let v = dot(x, x) - 2.0 * ax + aa;
            (if u > 0.0 && v > 0.0 { u * u / v } else { 0.0 }, j)
        })
        .collect();
    gains.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    let mut out = vec![a];
    let (mut by_cos, mut by_gain) = (pool[1..].iter().copied(), gains.into_iter().map(|g| g.1));
    while out.len() < CANDIDATES.min(pool.len()) {
        for next in [by_cos.next(), by_gain.next()].into_iter().flatten() {
            if out.len() < CANDIDATES && !out.contains(&next) {
                out.push(next);
            }
        }
    }
    out
}

/// Union-find over model indices.
fn find(parent: &mut [usize], x: usize) -> usize {
    let mut r = x;
    while parent[r] != r {
        r = parent[r];
    }
    let mut y = x;
    while parent[y] != r {
        let next = parent[y];
        parent[y] = r;
        y = next;
    }
    r
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

/// The declared provenance in a model's metadata (`null` when there is none).
fn declared(meta: &Map<String, Value>) -> Value {
    let mut out = Map::new();
    for (k, v) in meta {
        if DECLARED.contains(&k.as_str()) || k.starts_with("modelspec.") {
            let parsed = v
                .as_str()
                .filter(|s| s.trim_start().starts_with('{'))
                .and_then(|s| serde_json::from_str::<Value>(s).ok());
            out.insert(k.clone(), parsed.unwrap_or_else(|| v.clone()));
        }
    }
    if out.is_empty() {
        Value::Null
    } else {
        Value::Object(out)
    }
}

/// `provenance.mismatch` when an A1111 `sd_merge_recipe` disagrees with the measured recipe.
fn mismatch(declared: &Value, merge: &Value) -> Option<Value> {
    let recipe = declared.get("sd_merge_recipe")?;
    if merge.is_null() {
        return None; // parents not in the library: nothing to compare
    }
    let method = recipe.get("interp_method")?.as_str()?;
    let m = recipe.get("multiplier")?.as_f64()?;
    let measured = merge["method"].as_str().unwrap_or_default();
    let weights: Vec<f64> = merge["parents"]
        .as_array()
        .map(|p| p.iter().filter_map(|x| x["weight"].as_f64()).collect())
        .unwrap_or_default();
    let close = |x: f64| weights.iter().any(|w| (w - x).abs() <= SUM_TOL);
    let agrees = match method {
        "Weighted sum" => measured == "weighted-sum" && close(m) && close(1.0 - m),
        "Add difference" => measured == "add-difference" && close(m),
        _ => return None,
    };
    (!agrees).then(|| {
        json!({
            "check": "provenance.mismatch",
            "severity": "info",
            "message": format!(
                "metadata declares {method} with multiplier {m}, the weights show {measured} with weights {weights:?}"
            ),
            "details": {"declared": {"interp_method": method, "multiplier": m}, "measured": merge},
        })
    })
}

/// Options of a lineage run.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Models kept per model by the sketch screen before any fingerprint pair is computed;
    /// `None` compares every pair of models on fingerprints (exhaustive; quadratic).
    pub screen: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            screen: Some(SCREEN),
        }
    }
}

/// Nearest models kept per model by the sketch screen (docs/lineage.md, "Cost").
pub const SCREEN: usize = 48;
/// Buckets of the count sketch of one component.
const SKETCH: usize = 128;

/// SplitMix64 finaliser.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A count sketch of a model's samples per component (by index into `comps`): `SKETCH` signed
/// buckets each, linear in the weights, so sketch cosines estimate fingerprint cosines.
fn sketch(s: &Sampled, comps: &[String]) -> Vec<Option<(Vec<f32>, f32)>> {
    let mut acc: Vec<Option<Vec<f64>>> = vec![None; comps.len()];
    for t in &s.tensors {
        let Ok(c) = comps.binary_search(&t.comp) else {
            continue;
        };
        let a = acc[c].get_or_insert_with(|| vec![0.0; SKETCH]);
        let mut h = blake3::Hasher::new();
        h.update(t.comp.as_bytes());
        h.update(&[0]);
        h.update(t.name.as_bytes());
        h.update(&t.n.to_le_bytes());
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&h.finalize().as_bytes()[..8]);
        let seed = u64::from_le_bytes(seed);
        for (j, v) in s.of(t).iter().enumerate() {
            let z = mix64(seed.wrapping_add((j as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
            let b = (z % SKETCH as u64) as usize;
            a[b] += if z >> 63 == 1 { -v } else { *v };
        }
    }
    acc.into_iter()
        .map(|a| {
            a.map(|v| {
                let v: Vec<f32> = v.into_iter().map(|x| x as f32).collect();
                let norm = v.iter().map(|x| x * x).sum();
                (v, norm)
            })
        })
        .collect()
}

type Sketch = Vec<Option<(Vec<f32>, f32)>>;

/// Sketch cosine of `a` and `b` over the components both have (or component `only`).
fn sketch_cos(a: &Sketch, b: &Sketch, only: Option<usize>) -> f32 {
    let (mut d, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
    for (c, (x, y)) in a.iter().zip(b).enumerate() {
        if only.is_some_and(|o| o != c) {
            continue;
        }
        if let (Some((x, nx)), Some((y, ny))) = (x, y) {
            d += x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
            na += nx;
            nb += ny;
        }
    }
    let n = (na * nb).sqrt();
    if n > 0.0 {
        d / n
    } else {
        0.0
    }
}

/// Neighbours of each of `items` (model indices) among the others that `ok` allows: with `keep`,
/// the `keep` nearest by sketch cosine, made symmetric; without, all of them.
fn screen(
    items: &[usize],
    sk: &[Sketch],
    only: Option<usize>,
    ok: &(dyn Fn(usize, usize) -> bool + Sync),
    keep: Option<usize>,
) -> BTreeMap<usize, Vec<usize>> {
    let picked: Vec<Vec<usize>> = items
        .par_iter()
        .map(|&u| {
            let others = items.iter().copied().filter(|&v| v != u && ok(u, v));
            match keep {
                None => others.collect(),
                Some(k) => {
                    let mut scored: Vec<(f32, usize)> = others
                        .map(|v| (sketch_cos(&sk[u], &sk[v], only), v))
                        .collect();
                    let by = |a: &(f32, usize), b: &(f32, usize)| {
                        b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
                    };
                    if scored.len() > k {
                        scored.select_nth_unstable_by(k, by);
                        scored.truncate(k);
                    }
                    scored.into_iter().map(|x| x.1).collect()
                }
            }
        })
        .collect();
    let mut out: BTreeMap<usize, Vec<usize>> = items.iter().map(|&u| (u, Vec::new())).collect();
    for (&u, vs) in items.iter().zip(&picked) {
        for &v in vs {
            out.entry(u).or_default().push(v);
            out.entry(v).or_default().push(u);
        }
    }
    for v in out.values_mut() {
        v.sort_unstable();
        v.dedup();
    }
    out
}

/// Exact fingerprint cosine and shared sample count of two models (within `scope`).
fn pair_of(a: &Model, b: &Model, scope: Option<&str>) -> (f64, usize) {
    let mut s = [0.0; 3];
    let mut shared = 0usize;
    for (x, y) in a.sampled.shared(&b.sampled) {
        if scope.is_some_and(|c| x.comp != c) {
            continue;
        }
        shared += x.len;
        for (p, q) in a.sampled.of(x).iter().zip(b.sampled.of(y)) {
            s[0] += p * q;
            s[1] += p * p;
            s[2] += q * q;
        }
    }
    (cosine(&s), shared)
}

/// How files with the same weights are named where one stands for all of them (a parent, a
/// candidate, a VAE blend's parent; docs/lineage.md "Twins"): `prefer_kind` first (a standalone VAE
/// file for a VAE), then a `.safetensors` file before any other format, then the smallest file (an
/// fp16 copy before its fp32 re-save), then the first path in byte order.
fn twin_rank(m: &Model, prefer_kind: Option<Kind>) -> (bool, bool, u64, &str) {
    (
        prefer_kind.is_some_and(|k| m.kind != k),
        !m.path.ends_with(".safetensors"),
        m.size,
        m.path.as_str(),
    )
}

/// Groups of models with equal `keys` (in model order) and each group's representative.
fn twin_groups(
    models: &[Model],
    keys: &[[u8; 32]],
    members: impl Iterator<Item = usize>,
    prefer_kind: Option<Kind>,
) -> (Vec<usize>, BTreeMap<usize, Vec<usize>>) {
    let mut by_key: BTreeMap<[u8; 32], Vec<usize>> = BTreeMap::new();
    for i in members {
        by_key.entry(keys[i]).or_default().push(i);
    }
    let mut rep = vec![usize::MAX; models.len()];
    let mut groups = BTreeMap::new();
    for g in by_key.into_values() {
        let r = *g
            .iter()
            .min_by(|&&a, &&b| {
                twin_rank(&models[a], prefer_kind).cmp(&twin_rank(&models[b], prefer_kind))
            })
            .unwrap_or(&g[0]);
        for &i in &g {
            rep[i] = r;
        }
        groups.insert(r, g);
    }
    (rep, groups)
}

/// Relative squared distance of each model to the centroid of its family (over its own tensors):
/// the smallest is the family's root, the model the others are closest to on average.
fn rootness(models: &[Model], family: &[usize]) -> Vec<f64> {
    type Key<'a> = (&'a str, &'a str, u64);
    let mut sums: BTreeMap<usize, BTreeMap<Key, (Vec<f64>, usize)>> = BTreeMap::new();
    for (i, m) in models.iter().enumerate() {
        let f = sums.entry(family[i]).or_default();
        for t in &m.sampled.tensors {
            let e = f
                .entry((t.comp.as_str(), t.name.as_str(), t.n))
                .or_insert_with(|| (vec![0.0; t.len], 0));
            for (s, v) in e.0.iter_mut().zip(m.sampled.of(t)) {
                *s += v;
            }
            e.1 += 1;
        }
    }
    models
        .par_iter()
        .enumerate()
        .map(|(i, m)| {
            let f = &sums[&family[i]];
            let (mut d, mut norm) = (0.0, 0.0);
            for t in &m.sampled.tensors {
                let (s, c) = &f[&(t.comp.as_str(), t.name.as_str(), t.n)];
                for (v, s) in m.sampled.of(t).iter().zip(s) {
                    let x = v - s / *c as f64;
                    d += x * x;
                    norm += v * v;
                }
            }
            if norm > 0.0 {
                d / norm
            } else {
                0.0
            }
        })
        .collect()
}

/// The `fastscan.lineage/1` document of the models among `reports` (scan reports with fingerprints).
pub fn lineage(reports: &[Value]) -> Result<Value, String> {
    lineage_with(reports, Options::default())
}

/// [`lineage`] with explicit options (the exhaustive mode checks the screened one).
pub fn lineage_with(reports: &[Value], opts: Options) -> Result<Value, String> {
    let mut models: Vec<Model> = Vec::new();
    for r in reports {
        if let Some(m) = Model::from_report(r)? {
            models.push(m);
        }
    }
    models.sort_by(|a, b| a.path.cmp(&b.path));
    let n = models.len();
    let keys: Vec<[u8; 32]> = models.par_iter().map(|m| m.key(None)).collect();
    let (rep, groups) = twin_groups(&models, &keys, 0..n, None);
    let reps: Vec<usize> = groups.keys().copied().collect();

    // comparable: decided by the tensor structure (names, sizes) alone, once per pair of structures
    let structure: Vec<[u8; 32]> = models
        .par_iter()
        .map(|m| {
            let mut h = blake3::Hasher::new();
            for t in &m.sampled.tensors {
                h.update(t.comp.as_bytes());
                h.update(&[0]);
                h.update(t.name.as_bytes());
                h.update(&[0]);
                h.update(&t.n.to_le_bytes());
            }
            *h.finalize().as_bytes()
        })
        .collect();
    let mut kinds: Vec<[u8; 32]> = structure.clone();
    kinds.sort_unstable();
    kinds.dedup();
    let sid: Vec<usize> = structure
        .iter()
        .map(|s| kinds.binary_search(s).unwrap_or(0))
        .collect();
    let example: Vec<usize> = (0..kinds.len())
        .map(|k| sid.iter().position(|&s| s == k).unwrap_or(0))
        .collect();
    let totals: Vec<usize> = models.iter().map(|m| m.samples_in(None)).collect();
    let comparable_kinds: Vec<Vec<bool>> = (0..kinds.len())
        .map(|a| {
            (0..kinds.len())
                .map(|b| {
                    let (x, y) = (example[a], example[b]);
                    let shared: usize = models[x]
                        .sampled
                        .shared(&models[y].sampled)
                        .iter()
                        .map(|(t, _)| t.len)
                        .sum();
                    shared as f64 >= COMPARABLE * totals[x] as f64
                        && shared as f64 >= COMPARABLE * totals[y] as f64
                })
                .collect()
        })
        .collect();
    let comparable = |a: usize, b: usize| comparable_kinds[sid[a]][sid[b]];

    // the screen: per-component count sketches, nearest `screen` per model; pairs on fingerprints
    // only for the neighbours it keeps
    let mut comps: Vec<String> = models
        .iter()
        .flat_map(|m| m.sampled.tensors.iter().map(|t| t.comp.clone()))
        .collect();
    comps.sort_unstable();
    comps.dedup();
    let sketches: Vec<Sketch> = models
        .par_iter()
        .enumerate()
        .map(|(i, m)| {
            if rep[i] == i || m.sampled.tensors.iter().any(|t| t.comp == "vae") {
                sketch(&m.sampled, &comps)
            } else {
                Vec::new()
            }
        })
        .collect();
    let near = screen(&reps, &sketches, None, &comparable, opts.screen);
    let computed: BTreeMap<(usize, usize), f64> = near
        .iter()
        .flat_map(|(&u, vs)| vs.iter().filter(move |&&v| u < v).map(move |&v| (u, v)))
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|(u, v)| ((u, v), pair_of(&models[u], &models[v], None).0))
        .collect();
    // cosine of two models (any twins) whose representatives the screen paired
    let cos = |a: usize, b: usize| -> f64 {
        let (a, b) = (rep[a].min(rep[b]), rep[a].max(rep[b]));
        computed.get(&(a, b)).copied().unwrap_or(0.0)
    };
    let nears = |t: usize| -> &[usize] { near.get(&rep[t]).map_or(&[], |v| v.as_slice()) };

    // families from similarity alone (merges only ever join models that are similar already)
    let mut parent: Vec<usize> = (0..n).collect();
    for (&(u, v), &c) in &computed {
        if c >= FAMILY_MIN {
            let (ru, rv) = (find(&mut parent, u), find(&mut parent, v));
            parent[ru] = rv;
        }
    }
    for g in groups.values() {
        for &i in g {
            let (ri, rj) = (find(&mut parent, i), find(&mut parent, g[0]));
            parent[ri] = rj;
        }
    }
    let family: Vec<usize> = (0..n).map(|i| find(&mut parent, i)).collect();
    let rootness = rootness(&models, &family);
    // each family's members, most central first
    let mut central: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, &f) in family.iter().enumerate() {
        central.entry(f).or_default().push(i);
    }
    for v in central.values_mut() {
        v.sort_by(|&a, &b| rootness[a].total_cmp(&rootness[b]).then(a.cmp(&b)));
    }

    // candidates: the most similar comparable models, one (the representative) per group of twins
    let candidates = |t: usize| -> Vec<usize> {
        let mut order: Vec<usize> = nears(t).to_vec();
        order.sort_by(|&a, &b| cos(t, b).total_cmp(&cos(t, a)).then(a.cmp(&b)));
        order
    };

    // a recipe for model `t`; `merges` marks models a first pass explained (tried last as parents)
    let merge_of = |t: usize, merges: &[bool]| -> Option<Merge> {
        let m = &models[t];
        let ranked: Vec<usize> = candidates(t)
            .into_iter()
            .filter(|&j| m.covered_by(&models[j], None))
            .collect();
        let pool: Vec<usize> = ranked
            .iter()
            .copied()
            .filter(|&j| !merges[j])
            .take(POOL)
            .collect();
        let mut cands = pick(m, &pool, &models);
        cands.extend(
            ranked
                .iter()
                .copied()
                .filter(|&j| merges[j])
                .take(MERGE_CANDIDATES),
        );
        // the family's root is always tried: it is the base an add-difference subtracts
        let root = central[&family[t]]
            .iter()
            .copied()
            .find(|&j| j != t && !merges[j])
            .map(|r| rep[r]);
        if let Some(r) =
            root.filter(|&r| r != rep[t] && !cands.contains(&r) && m.covered_by(&models[r], None))
        {
            cands.push(r);
        }
        if cands.len() < 2 {
            return None;
        }
        let refs: Vec<&Model> = cands.iter().map(|&j| &models[j]).collect();
        let g = Gram::new(m, &refs, None)?;
        let pen: Vec<bool> = std::iter::once(false)
            .chain(cands.iter().map(|&j| merges[j]))
            .collect();
        // `T + a·C = A + a·B` reads four ways; the base is the most central of the four in the family
        let accept = |ad: &Merge| {
            let c = cands[ad.base.unwrap_or(1) - 1];
            let four = [t, cands[ad.parents[0].0 - 1], cands[ad.parents[1].0 - 1], c];
            four.iter().all(|&x| x == c || rootness[c] < rootness[x])
        };
        let mut f = weighted_sum(&g, &pen)
            .or_else(|| block_weighted(&g, &pen))
            .or_else(|| add_difference(&g, &accept))?;
        let map = |i: usize| cands[i - 1];
        f.parents = f.parents.into_iter().map(|(i, w)| (map(i), w)).collect();
        f.base = f.base.map(map);
        f.blocks = f.blocks.map(|b| {
            b.into_iter()
                .map(|(k, v)| (k, v.into_iter().map(|(i, w)| (map(i), w)).collect()))
                .collect()
        });
        Some(f)
    };
    // twins have the same recipe: one fit per group, by its representative
    let spread = |per_rep: Vec<bool>| -> Vec<bool> {
        (0..n)
            .map(|i| per_rep[reps.binary_search(&rep[i]).unwrap_or(0)])
            .collect()
    };
    let none = vec![false; n];
    let first: Vec<bool> = spread(
        reps.par_iter()
            .map(|&t| merge_of(t, &none).is_some())
            .collect(),
    );
    let merges: BTreeMap<usize, Merge> = reps
        .par_iter()
        .filter_map(|&t| merge_of(t, &first).map(|m| (t, m)))
        .collect();

    // blended VAEs: one fit per distinct VAE, against the other distinct VAEs of the library
    let has_vae: Vec<bool> = models
        .iter()
        .map(|m| m.sampled.tensors.iter().any(|x| x.comp == "vae"))
        .collect();
    let vae_keys: Vec<[u8; 32]> = models.par_iter().map(|m| m.key(Some("vae"))).collect();
    let (vae_rep, vae_groups) = twin_groups(
        &models,
        &vae_keys,
        (0..n).filter(|&i| has_vae[i]),
        Some(Kind::Vae),
    );
    let vae_reps: Vec<usize> = vae_groups.keys().copied().collect();
    let vae_comp = comps.binary_search(&"vae".to_string()).ok();
    let vae_ok = |a: usize, b: usize| models[a].covered_by(&models[b], Some("vae"));
    let vae_near = screen(&vae_reps, &sketches, vae_comp, &vae_ok, opts.screen);
    let blends: BTreeMap<usize, Value> = vae_reps
        .par_iter()
        .filter_map(|&t| {
            let m = &models[t];
            let mut scored: Vec<(f64, usize)> = vae_near[&t]
                .iter()
                .filter(|&&j| vae_ok(t, j))
                .map(|&j| (pair_of(m, &models[j], Some("vae")).0, j))
                .collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let vc: Vec<usize> = scored.into_iter().take(CANDIDATES).map(|x| x.1).collect();
            let refs: Vec<&Model> = vc.iter().map(|&j| &models[j]).collect();
            let b = (vc.len() >= 2)
                .then(|| Gram::new(m, &refs, Some("vae")))
                .flatten()
                .and_then(|g| weighted_sum(&g, &[]))?;
            let parents: Vec<Value> = b
                .parents
                .iter()
                .map(|&(i, w)| json!({"path": models[vc[i - 1]].path, "weight": round(w, 4)}))
                .collect();
            let names: Vec<String> = b
                .parents
                .iter()
                .map(|&(i, w)| format!("{} ({:.2})", models[vc[i - 1]].path, w))
                .collect();
            Some((
                t,
                json!({
                    "check": "vae.blended",
                    "severity": "warning",
                    "message": format!(
                        "the VAE is a blend of {}: blended VAEs are the known cause of gray, washed-out images",
                        names.join(" and ")
                    ),
                    "details": {"parents": parents, "fit": round(b.fit, 4)},
                }),
            ))
        })
        .collect();

    let mut out_models = Vec::with_capacity(n);
    for t in 0..n {
        let m = &models[t];
        let same: Vec<&str> = groups[&rep[t]]
            .iter()
            .filter(|&&j| j != t)
            .map(|&j| models[j].path.as_str())
            .collect();
        let mut near_t: Vec<usize> = nears(t)
            .iter()
            .flat_map(|r| groups[r].iter().copied())
            .collect();
        near_t.sort_by(|&a, &b| cos(t, b).total_cmp(&cos(t, a)).then(a.cmp(&b)));
        let nearest: Vec<Value> = near_t
            .iter()
            .take_while(|&&j| cos(t, j) >= NEAR_MIN)
            .take(NEAREST)
            .map(|&j| json!({"path": models[j].path, "similarity": round(cos(t, j).max(0.0), 4)}))
            .collect();
        let merge_json = match merges.get(&rep[t]) {
            None => Value::Null,
            Some(f) => {
                let path = |i: usize| models[i].path.clone();
                json!({
                    "method": f.method,
                    "parents": f.parents.iter().map(|&(i, w)| json!({"path": path(i), "weight": round(w, 4)})).collect::<Vec<_>>(),
                    "base": f.base.map(path),
                    "blocks": f.blocks.as_ref().map(|b| b.iter().map(|(k, v)| {
                        (k.clone(), Value::Object(v.iter().map(|&(i, w)| (path(i), json!(round(w, 4)))).collect()))
                    }).collect::<Map<_, _>>()),
                    "fit": round(f.fit, 4),
                })
            }
        };
        let declared = declared(&m.metadata);
        let mut findings: Vec<Value> = has_vae[t]
            .then(|| blends.get(&vae_rep[t]).cloned())
            .flatten()
            .into_iter()
            .collect();
        findings.extend(mismatch(&declared, &merge_json));
        out_models.push(json!({
            "path": m.path,
            "arch": m.arch,
            "kind": m.kind,
            "same_weights": same,
            "nearest": nearest,
            "merge": merge_json,
            "declared": declared,
            "findings": findings,
        }));
    }
    // families: similarity groups, joined further by the recipes found
    for (&t, f) in &merges {
        for j in f.parents.iter().map(|p| p.0).chain(f.base) {
            let (ri, rj) = (find(&mut parent, t), find(&mut parent, j));
            parent[ri] = rj;
        }
    }
    let mut fams: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for (i, m) in models.iter().enumerate() {
        let r = find(&mut parent, i);
        fams.entry(r).or_default().push(&m.path);
    }
    let mut families: Vec<Vec<&str>> = fams.into_values().filter(|g| g.len() > 1).collect();
    families.sort();
    Ok(json!({"schema": SCHEMA, "models": out_models, "families": families}))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Gram matrix of explicit vectors (index 0 is the target).
    fn gram(v: &[Vec<f64>]) -> Vec<Vec<f64>> {
        v.iter()
            .map(|a| {
                v.iter()
                    .map(|b| a.iter().zip(b).map(|(x, y)| x * y).sum())
                    .collect()
            })
            .collect()
    }

    fn noise(n: usize, seed: u64) -> Vec<f64> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 2001) as f64 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn least_squares_recovers_weights() {
        let a = noise(500, 1);
        let b = noise(500, 2);
        let t: Vec<f64> = a.iter().zip(&b).map(|(x, y)| 0.3 * x + 0.7 * y).collect();
        let g = gram(&[t, a, b]);
        let (w, r) = fit(&g, &[1, 2]).unwrap();
        assert!(
            (w[0] - 0.3).abs() < 1e-9 && (w[1] - 0.7).abs() < 1e-9,
            "{w:?}"
        );
        assert!(r < 1e-9);
    }

    #[test]
    fn weighted_sum_needs_a_fit_and_nonnegative_weights() {
        let base = noise(2000, 3);
        let ft = |s| -> Vec<f64> {
            base.iter()
                .zip(noise(2000, s))
                .map(|(x, d)| x + 0.1 * d)
                .collect()
        };
        let (f1, f2, f3) = (ft(4), ft(5), ft(6));
        let mix: Vec<f64> = f1.iter().zip(&f2).map(|(x, y)| 0.6 * x + 0.4 * y).collect();
        let g = |v: Vec<Vec<f64>>| {
            let total = gram(&v);
            Gram {
                blocks: vec![("BASE".into(), total.clone(), 1)],
                total,
                floor: rounding_noise(&v[0]),
            }
        };
        let m = weighted_sum(
            &g(vec![mix.clone(), f3.clone(), f1.clone(), f2.clone()]),
            &[],
        )
        .unwrap();
        assert_eq!(m.parents.len(), 2);
        assert_eq!(m.parents[0].0, 2);
        assert!((m.parents[0].1 - 0.6).abs() < 1e-6);
        // a parent is not a merge of its merge and the other parent (that needs a negative weight)
        assert!(weighted_sum(
            &g(vec![f1.clone(), mix.clone(), f2.clone(), f3.clone()]),
            &[]
        )
        .is_none());
        // the base is not a merge of its fine-tunes
        assert!(weighted_sum(&g(vec![base, f1, f2, f3]), &[]).is_none());
    }

    #[test]
    fn rounding_noise_follows_the_grid_values_lie_on() {
        let ulp2 = |e: i32| 2f64.powi(2 * e) / 12.0;
        // fp16 (not bf16: 1 + 2^-10 needs 10 mantissa bits), all in [1, 2): ulp 2^-10
        let f16s = [1.0, 1.5, 1.0 + 2f64.powi(-10), -1.25];
        assert_eq!(grid_bits(&f16s), 10);
        assert!((rounding_noise(&f16s) - 4.0 * ulp2(-10)).abs() < 1e-20);
        // bf16 values: ulp 2^-7 in [1, 2), 2^-6 in [2, 4)
        let bf = [1.0, -1.5, 3.0];
        assert_eq!(grid_bits(&bf), 7);
        assert!((rounding_noise(&bf) - (2.0 * ulp2(-7) + ulp2(-6))).abs() < 1e-20);
        // f32 values: the f32 noise is below the floor of 1e-10 of the squared norm
        let f32s = [1.0 + 2f64.powi(-20), 2.0];
        assert_eq!(grid_bits(&f32s), 23);
        assert_eq!(
            rounding_noise(&f32s),
            FLOOR_MIN * f32s.iter().map(|x| x * x).sum::<f64>()
        );
    }

    #[test]
    fn a_ninety_ten_merge_needs_its_second_parent() {
        let f16 = |v: Vec<f64>| -> Vec<f64> {
            v.into_iter()
                .map(|x| half::f16::from_f64(x).to_f64())
                .collect()
        };
        let base = f16(noise(4000, 7));
        let ft = |s: u64, d: f64| {
            f16(base
                .iter()
                .zip(noise(4000, s))
                .map(|(x, e)| x + d * e)
                .collect())
        };
        let (a, b, c, d) = (ft(8, 0.3), ft(9, 0.05), ft(10, 0.03), ft(11, 0.03));
        let m = f16(a.iter().zip(&b).map(|(x, y)| 0.9 * x + 0.1 * y).collect());
        let g = |v: Vec<&Vec<f64>>| {
            let total = gram(&v.iter().map(|x| (*x).clone()).collect::<Vec<_>>());
            Gram {
                blocks: vec![("BASE".into(), total.clone(), 1)],
                total,
                floor: rounding_noise(v[0]),
            }
        };
        // without B, A with two near-base models explains most of the distance to A, not to rounding
        let wrong = g(vec![&m, &a, &c, &d]);
        let (w, r) = fit(&wrong.total, &[1, 2, 3]).unwrap();
        let reference = nearest_distance(&wrong.total).unwrap();
        assert!(
            1.0 - r / reference > FIT_MIN && w.iter().all(|&x| x > WEIGHT_MIN),
            "{w:?}"
        );
        assert!(weighted_sum(&wrong, &[]).is_none());
        // with B: A 0.9, B 0.1
        let right = weighted_sum(&g(vec![&m, &a, &c, &d, &b]), &[]).unwrap();
        assert_eq!(right.parents.len(), 2);
        assert_eq!((right.parents[0].0, right.parents[1].0), (1, 4));
        assert!(
            (right.parents[0].1 - 0.9).abs() < 0.01,
            "{:?}",
            right.parents
        );
    }

    #[test]
    fn subsets_enumerate_combinations() {
        assert_eq!(subsets(3, 2), vec![vec![1, 2], vec![1, 3], vec![2, 3]]);
        assert_eq!(subsets(4, 3).len(), 4);
    }
}
