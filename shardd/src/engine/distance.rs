//! Distance functions and Qdrant's score conventions (which direction is better, thresholds).

use std::cmp::Ordering;

use crate::engine::params::Distance;

/// The best kernels this CPU supports, picked once.
struct Kernels {
    dot: fn(&[f32], &[f32]) -> f32,
    l2sq: fn(&[f32], &[f32]) -> f32,
    l1: fn(&[f32], &[f32]) -> f32,
    dot_bf16: fn(&[f32], &[u16]) -> f32,
    l2sq_bf16: fn(&[f32], &[u16]) -> f32,
    l1_bf16: fn(&[f32], &[u16]) -> f32,
}

fn kernels() -> &'static Kernels {
    static KERNELS: std::sync::OnceLock<Kernels> = std::sync::OnceLock::new();
    KERNELS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                return Kernels {
                    dot: x86::dot512,
                    l2sq: x86::l2sq512,
                    l1: x86::l1_512,
                    dot_bf16: x86::dot_bf16_512,
                    l2sq_bf16: x86::l2sq_bf16_512,
                    l1_bf16: x86::l1_bf16_512,
                };
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Kernels {
                    dot: x86::dot256,
                    l2sq: x86::l2sq256,
                    l1: x86::l1_256,
                    dot_bf16: x86::dot_bf16_256,
                    l2sq_bf16: x86::l2sq_bf16_256,
                    l1_bf16: x86::l1_bf16_256,
                };
            }
        }
        Kernels {
            dot: portable::dot,
            l2sq: portable::l2sq,
            l1: portable::l1,
            dot_bf16: portable::dot_bf16,
            l2sq_bf16: portable::l2sq_bf16,
            l1_bf16: portable::l1_bf16,
        }
    })
}

/// Dot product.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    (kernels().dot)(a, b)
}

/// Squared Euclidean distance.
#[inline]
pub fn l2sq(a: &[f32], b: &[f32]) -> f32 {
    (kernels().l2sq)(a, b)
}

/// Manhattan (L1) distance.
#[inline]
pub fn l1(a: &[f32], b: &[f32]) -> f32 {
    (kernels().l1)(a, b)
}

/// Rounds to bfloat16 (the top 16 bits of an f32), to nearest even; finite values stay finite.
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    let rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) as u16;
    if from_bf16(rounded).is_finite() {
        rounded
    } else {
        (bits >> 16) as u16
    }
}

/// Widens a bfloat16 back to f32 (exactly).
#[inline]
pub fn from_bf16(x: u16) -> f32 {
    f32::from_bits(u32::from(x) << 16)
}

/// Dot product of an f32 query and a bfloat16 vector.
#[inline]
pub fn dot_bf16(q: &[f32], v: &[u16]) -> f32 {
    (kernels().dot_bf16)(q, v)
}

/// Squared Euclidean distance between an f32 query and a bfloat16 vector.
#[inline]
pub fn l2sq_bf16(q: &[f32], v: &[u16]) -> f32 {
    (kernels().l2sq_bf16)(q, v)
}

/// Manhattan distance between an f32 query and a bfloat16 vector.
#[inline]
pub fn l1_bf16(q: &[f32], v: &[u16]) -> f32 {
    (kernels().l1_bf16)(q, v)
}

/// Kernels written so the compiler vectorises them for any target.
mod portable {
    use super::from_bf16;

    pub fn dot_bf16(q: &[f32], v: &[u16]) -> f32 {
        q.iter().zip(v).map(|(x, y)| x * from_bf16(*y)).sum()
    }

    pub fn l2sq_bf16(q: &[f32], v: &[u16]) -> f32 {
        q.iter()
            .zip(v)
            .map(|(x, y)| (x - from_bf16(*y)) * (x - from_bf16(*y)))
            .sum()
    }

    pub fn l1_bf16(q: &[f32], v: &[u16]) -> f32 {
        q.iter()
            .zip(v)
            .map(|(x, y)| (x - from_bf16(*y)).abs())
            .sum()
    }

    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0.0f32; 8];
        let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
        let tail: f32 = ca
            .remainder()
            .iter()
            .zip(cb.remainder())
            .map(|(x, y)| x * y)
            .sum();
        for (x, y) in ca.zip(cb) {
            for i in 0..8 {
                acc[i] += x[i] * y[i];
            }
        }
        acc.iter().sum::<f32>() + tail
    }

    pub fn l2sq(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0.0f32; 8];
        let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
        let tail: f32 = ca
            .remainder()
            .iter()
            .zip(cb.remainder())
            .map(|(x, y)| (x - y) * (x - y))
            .sum();
        for (x, y) in ca.zip(cb) {
            for i in 0..8 {
                let d = x[i] - y[i];
                acc[i] += d * d;
            }
        }
        acc.iter().sum::<f32>() + tail
    }

    pub fn l1(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0.0f32; 8];
        let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
        let tail: f32 = ca
            .remainder()
            .iter()
            .zip(cb.remainder())
            .map(|(x, y)| (x - y).abs())
            .sum();
        for (x, y) in ca.zip(cb) {
            for i in 0..8 {
                acc[i] += (x[i] - y[i]).abs();
            }
        }
        acc.iter().sum::<f32>() + tail
    }
}

/// AVX-512 and AVX2+FMA kernels, chosen at run time by [`kernels`].
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    macro_rules! kernel512 {
        ($name:ident, $inner:ident, $step:expr, $tail:expr) => {
            pub fn $name(a: &[f32], b: &[f32]) -> f32 {
                // SAFETY: chosen only after `avx512f` was detected.
                unsafe { $inner(a, b) }
            }
            #[target_feature(enable = "avx512f")]
            unsafe fn $inner(a: &[f32], b: &[f32]) -> f32 {
                let n = a.len().min(b.len());
                let (pa, pb) = (a.as_ptr(), b.as_ptr());
                let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
                let mut i = 0;
                // SAFETY: every load reads 16 floats below `n` from both slices.
                unsafe {
                    while i + 32 <= n {
                        acc0 = $step(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), acc0);
                        acc1 = $step(
                            _mm512_loadu_ps(pa.add(i + 16)),
                            _mm512_loadu_ps(pb.add(i + 16)),
                            acc1,
                        );
                        i += 32;
                    }
                    if i + 16 <= n {
                        acc0 = $step(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), acc0);
                        i += 16;
                    }
                }
                let mut sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
                for j in i..n {
                    sum += $tail(a[j], b[j]);
                }
                sum
            }
        };
    }

    macro_rules! kernel256 {
        ($name:ident, $inner:ident, $step:expr, $tail:expr) => {
            pub fn $name(a: &[f32], b: &[f32]) -> f32 {
                // SAFETY: chosen only after `avx2` and `fma` were detected.
                unsafe { $inner(a, b) }
            }
            #[target_feature(enable = "avx2,fma")]
            unsafe fn $inner(a: &[f32], b: &[f32]) -> f32 {
                let n = a.len().min(b.len());
                let (pa, pb) = (a.as_ptr(), b.as_ptr());
                let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                let mut i = 0;
                // SAFETY: every load reads 8 floats below `n` from both slices.
                unsafe {
                    while i + 16 <= n {
                        acc0 = $step(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
                        acc1 = $step(
                            _mm256_loadu_ps(pa.add(i + 8)),
                            _mm256_loadu_ps(pb.add(i + 8)),
                            acc1,
                        );
                        i += 16;
                    }
                    if i + 8 <= n {
                        acc0 = $step(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
                        i += 8;
                    }
                }
                let v = _mm256_add_ps(acc0, acc1);
                let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                let mut sum = _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
                for j in i..n {
                    sum += $tail(a[j], b[j]);
                }
                sum
            }
        };
    }

    #[target_feature(enable = "avx512f")]
    fn dot_step512(x: __m512, y: __m512, acc: __m512) -> __m512 {
        _mm512_fmadd_ps(x, y, acc)
    }
    #[target_feature(enable = "avx512f")]
    fn l2_step512(x: __m512, y: __m512, acc: __m512) -> __m512 {
        let d = _mm512_sub_ps(x, y);
        _mm512_fmadd_ps(d, d, acc)
    }
    #[target_feature(enable = "avx512f")]
    fn l1_step512(x: __m512, y: __m512, acc: __m512) -> __m512 {
        _mm512_add_ps(acc, _mm512_abs_ps(_mm512_sub_ps(x, y)))
    }
    #[target_feature(enable = "avx2,fma")]
    fn dot_step256(x: __m256, y: __m256, acc: __m256) -> __m256 {
        _mm256_fmadd_ps(x, y, acc)
    }
    #[target_feature(enable = "avx2,fma")]
    fn l2_step256(x: __m256, y: __m256, acc: __m256) -> __m256 {
        let d = _mm256_sub_ps(x, y);
        _mm256_fmadd_ps(d, d, acc)
    }
    #[target_feature(enable = "avx2,fma")]
    fn l1_step256(x: __m256, y: __m256, acc: __m256) -> __m256 {
        _mm256_add_ps(
            acc,
            _mm256_andnot_ps(_mm256_set1_ps(-0.0), _mm256_sub_ps(x, y)),
        )
    }

    macro_rules! kernel_bf16 {
        ($name512:ident, $inner512:ident, $step512:ident, $name256:ident, $inner256:ident, $step256:ident, $tail:expr) => {
            pub fn $name512(q: &[f32], v: &[u16]) -> f32 {
                // SAFETY: chosen only after `avx512f` was detected.
                unsafe { $inner512(q, v) }
            }
            #[target_feature(enable = "avx512f")]
            unsafe fn $inner512(q: &[f32], v: &[u16]) -> f32 {
                let n = q.len().min(v.len());
                let mut acc = _mm512_setzero_ps();
                let mut i = 0;
                // SAFETY: each step reads 16 floats and 16 u16s below `n`.
                unsafe {
                    while i + 16 <= n {
                        let wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(
                            v.as_ptr().add(i) as *const __m256i
                        ));
                        let y = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(wide));
                        acc = $step512(_mm512_loadu_ps(q.as_ptr().add(i)), y, acc);
                        i += 16;
                    }
                }
                let mut sum = _mm512_reduce_add_ps(acc);
                for j in i..n {
                    sum += $tail(q[j], super::from_bf16(v[j]));
                }
                sum
            }
            pub fn $name256(q: &[f32], v: &[u16]) -> f32 {
                // SAFETY: chosen only after `avx2` and `fma` were detected.
                unsafe { $inner256(q, v) }
            }
            #[target_feature(enable = "avx2,fma")]
            unsafe fn $inner256(q: &[f32], v: &[u16]) -> f32 {
                let n = q.len().min(v.len());
                let mut acc = _mm256_setzero_ps();
                let mut i = 0;
                // SAFETY: each step reads 8 floats and 8 u16s below `n`.
                unsafe {
                    while i + 8 <= n {
                        let wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(
                            v.as_ptr().add(i) as *const __m128i
                        ));
                        let y = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(wide));
                        acc = $step256(_mm256_loadu_ps(q.as_ptr().add(i)), y, acc);
                        i += 8;
                    }
                }
                let s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                let mut sum = _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
                for j in i..n {
                    sum += $tail(q[j], super::from_bf16(v[j]));
                }
                sum
            }
        };
    }

    kernel_bf16!(
        dot_bf16_512,
        dot_bf16_512_inner,
        dot_step512,
        dot_bf16_256,
        dot_bf16_256_inner,
        dot_step256,
        |x: f32, y: f32| x * y
    );
    kernel_bf16!(
        l2sq_bf16_512,
        l2sq_bf16_512_inner,
        l2_step512,
        l2sq_bf16_256,
        l2sq_bf16_256_inner,
        l2_step256,
        |x: f32, y: f32| (x - y) * (x - y)
    );
    kernel_bf16!(
        l1_bf16_512,
        l1_bf16_512_inner,
        l1_step512,
        l1_bf16_256,
        l1_bf16_256_inner,
        l1_step256,
        |x: f32, y: f32| (x - y).abs()
    );
    kernel512!(dot512, dot512_inner, dot_step512, |x: f32, y: f32| x * y);
    kernel512!(l2sq512, l2sq512_inner, l2_step512, |x: f32, y: f32| (x - y)
        * (x - y));
    kernel512!(l1_512, l1_512_inner, l1_step512, |x: f32, y: f32| (x - y)
        .abs());
    kernel256!(dot256, dot256_inner, dot_step256, |x: f32, y: f32| x * y);
    kernel256!(l2sq256, l2sq256_inner, l2_step256, |x: f32, y: f32| (x - y)
        * (x - y));
    kernel256!(l1_256, l1_256_inner, l1_step256, |x: f32, y: f32| (x - y)
        .abs());
}

impl Distance {
    /// Prepares a vector for storage or as a query: cosine vectors are normalised to unit length.
    pub fn prepare(self, v: &mut [f32]) {
        if self == Distance::Cosine {
            let norm = dot(v, v).sqrt();
            if norm > 0.0 {
                v.iter_mut().for_each(|x| *x /= norm);
            }
        }
    }

    /// The score Qdrant reports between a prepared query and a stored vector.
    pub fn score(self, q: &[f32], v: &[f32]) -> f32 {
        match self {
            Distance::Cosine | Distance::Dot => dot(q, v),
            Distance::Euclid => l2sq(q, v).sqrt(),
            Distance::Manhattan => l1(q, v),
        }
    }

    /// Whether a higher score means closer.
    pub fn higher_is_better(self) -> bool {
        matches!(self, Distance::Cosine | Distance::Dot)
    }

    /// Orders scores best first.
    pub fn cmp_scores(self, a: f32, b: f32) -> Ordering {
        if self.higher_is_better() {
            b.total_cmp(&a)
        } else {
            a.total_cmp(&b)
        }
    }

    /// Whether `score` passes a `score_threshold` (at least it for similarities, at most for distances).
    pub fn passes(self, score: f32, threshold: Option<f32>) -> bool {
        match threshold {
            None => true,
            Some(t) if self.higher_is_better() => score >= t,
            Some(t) => score <= t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
        let dot = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let l2 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
        let l1 = a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum();
        (dot, l2, l1)
    }

    #[test]
    fn vectorised_kernels_match_naive_sums() {
        for n in [1, 7, 8, 9, 15, 16, 17, 31, 33, 128, 1536] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let (d, s, m) = naive(&a, &b);
            let tol = 1e-4 * (n as f32);
            for (got, want) in [(dot(&a, &b), d), (l2sq(&a, &b), s), (l1(&a, &b), m)] {
                assert!((got - want).abs() < tol, "n={n}: {got} vs {want}");
            }
            assert!((portable::dot(&a, &b) - d).abs() < tol);
            assert!((portable::l2sq(&a, &b) - s).abs() < tol);
            assert!((portable::l1(&a, &b) - m).abs() < tol);
        }
    }

    #[test]
    fn bf16_kernels_match_the_widened_vectors() {
        for n in [1, 7, 8, 15, 16, 17, 33, 128] {
            let q: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
            let v: Vec<u16> = (0..n).map(|i| to_bf16((i as f32 * 0.11).cos())).collect();
            let w: Vec<f32> = v.iter().map(|x| from_bf16(*x)).collect();
            let (d, s, m) = naive(&q, &w);
            let tol = 1e-4 * (n as f32) * 4.0;
            assert!((dot_bf16(&q, &v) - d).abs() < tol);
            assert!((l2sq_bf16(&q, &v) - s).abs() < tol);
            assert!((l1_bf16(&q, &v) - m).abs() < tol);
        }
        assert_eq!(from_bf16(to_bf16(1.5)), 1.5);
        assert!(from_bf16(to_bf16(f32::MAX)).is_finite());
    }

    #[test]
    fn cosine_prepare_normalises_and_keeps_zero() {
        let mut v = vec![3.0, 4.0];
        Distance::Cosine.prepare(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut z = vec![0.0, 0.0];
        Distance::Cosine.prepare(&mut z);
        assert_eq!(z, vec![0.0, 0.0]);
    }

    #[test]
    fn thresholds_follow_the_distance_direction() {
        assert!(Distance::Dot.passes(0.9, Some(0.5)));
        assert!(!Distance::Euclid.passes(0.9, Some(0.5)));
        assert_eq!(Distance::Euclid.cmp_scores(0.1, 0.2), Ordering::Less);
        assert_eq!(Distance::Dot.cmp_scores(0.1, 0.2), Ordering::Greater);
    }
}
