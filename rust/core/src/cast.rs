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
/// this pair is no cast (see [`can_cast`]) or `src` is not whole elements.
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

    #[test]
    fn refuses_what_is_no_cast() {
        let mut out = vec![];
        assert!(!cast(&[0; 8], Dtype::I64, Dtype::F32, &mut out));
        assert!(!cast(&[0; 8], Dtype::F32, Dtype::F64, &mut out));
        assert!(!cast(&[0; 3], Dtype::F32, Dtype::F16, &mut out));
        assert!(out.is_empty());
    }
}
