//! Distance functions and Qdrant's score conventions (which direction is better, thresholds).

use std::cmp::Ordering;

use crate::params::Distance;

/// Dot product, written so the compiler vectorises it.
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

/// Squared Euclidean distance.
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

/// Manhattan (L1) distance.
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
        for n in [1, 7, 8, 9, 31, 128] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let (d, s, m) = naive(&a, &b);
            assert!((dot(&a, &b) - d).abs() < 1e-4);
            assert!((l2sq(&a, &b) - s).abs() < 1e-4);
            assert!((l1(&a, &b) - m).abs() < 1e-4);
        }
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
