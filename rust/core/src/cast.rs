//! Casting raw little-endian float tensor bytes between F64, F32, F16 and BF16 (fp8 read up), rounding to nearest even.

use crate::dtype::Dtype;
use half::{bf16, f16};

/// Dtypes a cast reads (fp8 only up: every fp8 value is exact in F16, BF16 and F32).
pub const CAST_FROM: [Dtype; 6] = [
    Dtype::F64,
    Dtype::F32,
    Dtype::F16,
    Dtype::BF16,
    Dtype::F8_E4M3,
    Dtype::F8_E5M2,
];
/// Dtypes a cast writes (F64 only ever comes down).
pub const CAST_TO: [Dtype; 3] = [Dtype::F32, Dtype::F16, Dtype::BF16];

/// True when `cast` converts `from` to `to`.
pub fn can_cast(from: Dtype, to: Dtype) -> bool {
    CAST_FROM.contains(&from) && CAST_TO.contains(&to)
}

fn each<const N: usize>(src: &[u8], out: &mut Vec<u8>, f: impl Fn([u8; N], &mut Vec<u8>)) {
    for c in src.chunks_exact(N) {
        f(c.try_into().expect("chunks_exact gives N bytes"), out);
    }
}

/// The value of an F8_E4M3 byte ("fn" variant: no infinities, S.1111.111 is NaN; bias 7, 3 mantissa bits).
fn e4m3(b: u8) -> f32 {
    let (exp, man) = ((b >> 3) & 0xF, (b & 7) as f32);
    let mag = if b & 0x7F == 0x7F {
        f32::NAN
    } else if exp == 0 {
        man / 8.0 * 2f32.powi(-6)
    } else {
        (1.0 + man / 8.0) * 2f32.powi(exp as i32 - 7)
    };
    if b & 0x80 != 0 {
        -mag
    } else {
        mag
    }
}

/// The value of an F8_E5M2 byte: the top byte of an F16 (same exponent, infinities and NaN).
fn e5m2(b: u8) -> f32 {
    f16::from_bits((b as u16) << 8).to_f32()
}

/// `v` rounded to f32 with round-to-odd: exact values stay, inexact ones truncate and set the last bit.
/// Rounding that to any format at least two bits narrower (f16) equals rounding `v` once.
fn to_f32_odd(v: f64) -> f32 {
    let f = v as f32;
    if !f.is_finite() || f as f64 == v {
        return f;
    }
    let mut b = f.to_bits();
    if (f as f64).abs() > v.abs() {
        b -= 1; // toward zero (sign-magnitude bits: one step down in magnitude)
    }
    f32::from_bits(b | 1)
}

/// Appends to `out` the elements of `src` (dtype `from`) converted to `to`, or returns `false` when
/// this pair is no cast (see `can_cast`) or `src` is not whole elements.
///
/// Every rounding is round-to-nearest-even as numpy and torch do; F64 to BF16 goes through F32 (as
/// torch does); NaN stays NaN and values too large become ±Inf.
pub fn cast(src: &[u8], from: Dtype, to: Dtype, out: &mut Vec<u8>) -> bool {
    if !can_cast(from, to) || !(src.len() as u64).is_multiple_of(from.bits() / 8) {
        return false;
    }
    out.reserve(src.len() / (from.bits() / 8) as usize * (to.bits() / 8) as usize);
    let put = |v: f32, out: &mut Vec<u8>| match to {
        Dtype::F32 => out.extend_from_slice(&v.to_le_bytes()),
        Dtype::F16 => out.extend_from_slice(&f16::from_f32(v).to_le_bytes()),
        _ => out.extend_from_slice(&bf16::from_f32(v).to_le_bytes()),
    };
    if fast(src, from, to, out) {
        return true;
    }
    match from {
        Dtype::F64 => each(src, out, |c, out| {
            let v = f64::from_le_bytes(c);
            match to {
                // one rounding, as numpy's astype (half's own from_f64 rounds twice)
                Dtype::F16 => out.extend_from_slice(&f16::from_f32(to_f32_odd(v)).to_le_bytes()),
                _ => put(v as f32, out),
            }
        }),
        Dtype::F32 => each(src, out, |c, out| put(f32::from_le_bytes(c), out)),
        Dtype::F16 => each(src, out, |c, out| put(f16::from_le_bytes(c).to_f32(), out)),
        Dtype::F8_E4M3 => each(src, out, |[b], out| put(e4m3(b), out)),
        Dtype::F8_E5M2 => each(src, out, |[b], out| put(e5m2(b), out)),
        _ => each(src, out, |c, out| put(bf16::from_le_bytes(c).to_f32(), out)),
    }
    true
}

/// Elements converted per block of the fast paths (stack arrays, so byte buffers of any alignment work).
const BLOCK: usize = 2048;

/// F32 bits rounded to BF16 bits, to nearest even; NaN stays NaN (quiet bit set), as `half` does.
#[inline(always)]
fn bf16_bits(x: u32) -> u16 {
    let nan = x & 0x7FFF_FFFF > 0x7F80_0000;
    let rounded = (x.wrapping_add(0x7FFF + ((x >> 16) & 1)) >> 16) as u16;
    if nan {
        ((x >> 16) | 0x0040) as u16
    } else {
        rounded
    }
}

/// Reads the little-endian elements of `src` (whole elements) block by block as `[T; BLOCK]`.
macro_rules! blocks {
    ($src:expr, $n:expr, $t:ty, |$blk:ident, $len:ident| $body:block) => {
        for c in $src.chunks($n * BLOCK) {
            let $len = c.len() / $n;
            let mut $blk = [<$t>::default(); BLOCK];
            for (d, e) in $blk.iter_mut().zip(c.chunks_exact($n)) {
                *d = <$t>::from_le_bytes(e.try_into().expect("chunks_exact gives N bytes"));
            }
            $body
        }
    };
}

/// The common casts between F32, F16 and BF16 in blocks the compiler vectorises (F16C for F16 where the
/// CPU has it, through `half`'s slice conversions); the same bits as the element-wise path. `false`:
/// not one of these pairs.
fn fast(src: &[u8], from: Dtype, to: Dtype, out: &mut Vec<u8>) -> bool {
    use half::slice::HalfFloatSliceExt;
    let mut f32s = [0f32; BLOCK];
    let mut halves = [f16::ZERO; BLOCK];
    let put16 = |v: &[u16], out: &mut Vec<u8>| {
        let at = out.len();
        out.resize(at + 2 * v.len(), 0);
        for (d, x) in out[at..].chunks_exact_mut(2).zip(v) {
            d.copy_from_slice(&x.to_le_bytes());
        }
    };
    let put32 = |v: &[f32], out: &mut Vec<u8>| {
        let at = out.len();
        out.resize(at + 4 * v.len(), 0);
        for (d, x) in out[at..].chunks_exact_mut(4).zip(v) {
            d.copy_from_slice(&x.to_le_bytes());
        }
    };
    match (from, to) {
        (Dtype::F32, Dtype::F16) => blocks!(src, 4, u32, |b, n| {
            for (f, x) in f32s.iter_mut().zip(&b[..n]) {
                *f = f32::from_bits(*x);
            }
            halves[..n].convert_from_f32_slice(&f32s[..n]);
            let bits: [u16; BLOCK] = std::array::from_fn(|i| halves[i].to_bits());
            put16(&bits[..n], out);
        }),
        (Dtype::F32, Dtype::BF16) => blocks!(src, 4, u32, |b, n| {
            let bits: [u16; BLOCK] = std::array::from_fn(|i| bf16_bits(b[i]));
            put16(&bits[..n], out);
        }),
        (Dtype::F16, Dtype::F32) | (Dtype::F16, Dtype::BF16) => blocks!(src, 2, u16, |b, n| {
            for (h, x) in halves.iter_mut().zip(&b[..n]) {
                *h = f16::from_bits(*x);
            }
            halves[..n].convert_to_f32_slice(&mut f32s[..n]);
            if to == Dtype::F32 {
                put32(&f32s[..n], out);
            } else {
                let bits: [u16; BLOCK] = std::array::from_fn(|i| bf16_bits(f32s[i].to_bits()));
                put16(&bits[..n], out);
            }
        }),
        (Dtype::BF16, Dtype::F32) | (Dtype::BF16, Dtype::F16) => blocks!(src, 2, u16, |b, n| {
            for (f, x) in f32s.iter_mut().zip(&b[..n]) {
                // NaN gets its quiet bit, as `half` reads it
                let q = if *x & 0x7FFF > 0x7F80 { 0x0040 } else { 0 };
                *f = f32::from_bits(((*x | q) as u32) << 16);
            }
            if to == Dtype::F32 {
                put32(&f32s[..n], out);
            } else {
                halves[..n].convert_from_f32_slice(&f32s[..n]);
                let bits: [u16; BLOCK] = std::array::from_fn(|i| halves[i].to_bits());
                put16(&bits[..n], out);
            }
        }),
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn u16s(b: &[u8]) -> Vec<u16> {
        b.chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect()
    }

    #[test]
    fn bf16_rounds_to_nearest_even_and_keeps_nan() {
        // 1 + 2^-8 is half-way between two bf16 values: ties go to the even one (1.0).
        // 1 + 3*2^-8 is half-way too: ties go up to the even 1 + 2^-6.
        let src = f32s(&[
            1.0 + 1.0 / 256.0,
            1.0 + 3.0 / 256.0,
            f32::NAN,
            f32::MAX,
            -0.0,
        ]);
        let mut out = vec![];
        assert!(cast(&src, Dtype::F32, Dtype::BF16, &mut out));
        let bits = u16s(&out);
        assert_eq!(bits[0], 0x3F80);
        assert_eq!(bits[1], 0x3F82);
        assert!(bits[2] & 0x7F80 == 0x7F80 && bits[2] & 0x7F != 0);
        assert_eq!(bits[3], 0x7F80); // rounds up past bf16 max: +Inf
        assert_eq!(bits[4], 0x8000);
    }

    #[test]
    fn f16_from_f64_rounds_once() {
        // 1 + 2^-11 + 2^-40 is just above the half-way point between f16 1.0 and 1 + 2^-10, so it
        // rounds up; going through f32 first would drop the 2^-40 and round down to even.
        let v = 1.0f64 + 2f64.powi(-11) + 2f64.powi(-40);
        let mut out = vec![];
        assert!(cast(&v.to_le_bytes(), Dtype::F64, Dtype::F16, &mut out));
        assert_eq!(u16s(&out), vec![0x3C01]);
    }

    #[test]
    fn f16_from_f64_matches_a_direct_rounding() {
        // Exact f16 neighbours, picked by distance in f64 (ties to even): independent of the code above.
        let f16_value = |bits: u16| f16::from_bits(bits).to_f64();
        let values = [
            0.1,
            -0.1,
            1.0 + 2f64.powi(-11),
            1.0 + 3.0 * 2f64.powi(-11),
            1.0 + 2f64.powi(-11) - 2f64.powi(-40),
            65519.0,
            2f64.powi(-25) + 2f64.powi(-50),
            3.0e-8,
            -7.77e-6,
        ];
        for v in values {
            let mut out = vec![];
            assert!(cast(&v.to_le_bytes(), Dtype::F64, Dtype::F16, &mut out));
            let got = u16s(&out)[0];
            let lo = f16::from_f64(v); // some neighbour; search around it for the nearest
            let cands: Vec<u16> = (lo.to_bits().saturating_sub(2)..=lo.to_bits().saturating_add(2))
                .filter(|&b| b & 0x7C00 != 0x7C00 || b & 0x3FF == 0)
                .filter(|&b| (b & 0x8000 != 0) == v.is_sign_negative())
                .collect();
            let best = cands
                .iter()
                .copied()
                .min_by(|&a, &b| {
                    let (da, db) = ((f16_value(a) - v).abs(), (f16_value(b) - v).abs());
                    da.partial_cmp(&db).unwrap().then((a & 1).cmp(&(b & 1)))
                })
                .unwrap();
            assert_eq!(got, best, "{v}");
        }
        // Half-way between f16's largest value and the next power of two rounds (to even) to +Inf.
        let mut out = vec![];
        assert!(cast(
            &65520f64.to_le_bytes(),
            Dtype::F64,
            Dtype::F16,
            &mut out
        ));
        assert_eq!(u16s(&out), vec![0x7C00]);
    }

    #[test]
    fn fp8_reads_up_exactly() {
        // E4M3: 0x38 = 2^0 * 1.0; 0x01 = smallest subnormal 2^-9; 0x7E = 448 (largest); 0xFF = NaN.
        // E5M2: 0x3C = 1.0; 0x7C = +Inf; 0x01 = 2^-16.
        let mut out = vec![];
        assert!(cast(
            &[0x38, 0x01, 0x7E, 0xFF, 0xB8],
            Dtype::F8_E4M3,
            Dtype::F32,
            &mut out
        ));
        let v: Vec<f32> = out
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(&v[..3], &[1.0, 2f32.powi(-9), 448.0]);
        assert!(v[3].is_nan());
        assert_eq!(v[4], -1.0);
        let mut out = vec![];
        assert!(cast(
            &[0x3C, 0x7C, 0x01],
            Dtype::F8_E5M2,
            Dtype::F16,
            &mut out
        ));
        assert_eq!(u16s(&out), vec![0x3C00, 0x7C00, 0x0100]);
        assert!(!cast(&[0x3C], Dtype::F16, Dtype::F8_E5M2, &mut vec![]));
    }

    /// Every F16 and BF16 bit pattern, and F32 patterns spread over the whole range (NaNs, infinities,
    /// subnormals, ties included), cast through the block paths equal `half`'s element-wise conversions.
    #[test]
    fn the_block_casts_equal_halfs_element_wise_conversions() {
        let all16: Vec<u8> = (0..=u16::MAX).flat_map(|x| x.to_le_bytes()).collect();
        let mut f32_bits: Vec<u32> = (0..=u16::MAX as u32)
            .flat_map(|hi| {
                [
                    hi << 16,
                    (hi << 16) | 0x8000,
                    (hi << 16) | 0x8001,
                    (hi << 16) | 0x7FFF,
                ]
            })
            .collect();
        f32_bits.extend((0..200_000u32).map(|i| i.wrapping_mul(2654435761)));
        let all32: Vec<u8> = f32_bits.iter().flat_map(|x| x.to_le_bytes()).collect();
        let cases: [(Dtype, Dtype, &[u8]); 6] = [
            (Dtype::F32, Dtype::F16, &all32),
            (Dtype::F32, Dtype::BF16, &all32),
            (Dtype::F16, Dtype::F32, &all16),
            (Dtype::F16, Dtype::BF16, &all16),
            (Dtype::BF16, Dtype::F32, &all16),
            (Dtype::BF16, Dtype::F16, &all16),
        ];
        for (from, to, src) in cases {
            let value = |c: &[u8]| match from {
                Dtype::F32 => f32::from_le_bytes(c.try_into().unwrap()),
                Dtype::F16 => f16::from_le_bytes(c.try_into().unwrap()).to_f32(),
                _ => bf16::from_le_bytes(c.try_into().unwrap()).to_f32(),
            };
            let want: Vec<u8> = src
                .chunks_exact((from.bits() / 8) as usize)
                .flat_map(|c| {
                    let v = value(c);
                    match to {
                        Dtype::F32 => v.to_le_bytes().to_vec(),
                        Dtype::F16 => f16::from_f32(v).to_le_bytes().to_vec(),
                        _ => bf16::from_f32(v).to_le_bytes().to_vec(),
                    }
                })
                .collect();
            let mut got = vec![];
            assert!(cast(src, from, to, &mut got));
            let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
            assert!(
                got.len() == want.len() && first_diff.is_none(),
                "{from} -> {to}: {first_diff:?}"
            );
        }
    }

    #[test]
    fn refuses_what_is_no_cast() {
        let mut out = vec![];
        assert!(!cast(&[0; 8], Dtype::I64, Dtype::F32, &mut out));
        assert!(!cast(&[0; 8], Dtype::F32, Dtype::F64, &mut out));
        assert!(!cast(&[0; 3], Dtype::F32, Dtype::F16, &mut out));
        assert!(out.is_empty());
    }
}
