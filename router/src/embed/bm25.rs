//! BM25 sparse vectors computed by the router, as Qdrant's `qdrant/bm25` model makes them with
//! its defaults: words (runs of letters and digits) lowercased, English stop words dropped,
//! Snowball English stems, each stem's index the absolute value of its signed 32-bit
//! murmur3 hash. A document's values are BM25's term-frequency part (`k` 1.2, `b` 0.75, average
//! length 256); a query's are 1 per distinct stem. The inverse document frequency is the
//! collection's (`modifier: idf` on the sparse vector), so it follows the data.

use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;

use rust_stemmers::{Algorithm, Stemmer};
use shardd::engine::point::SparseVector;

/// The model name a `Document` gives for these vectors.
pub const MODEL: &str = "qdrant/bm25";

/// BM25's term-frequency saturation.
const K: f32 = 1.2;
/// BM25's length normalisation.
const B: f32 = 0.75;
/// The document length BM25 normalises to, in words.
const AVG_LEN: f32 = 256.0;

/// English stop words (NLTK's list, the one `qdrant/bm25` drops).
const STOP_WORDS: &[&str] = &[
    "i",
    "me",
    "my",
    "myself",
    "we",
    "our",
    "ours",
    "ourselves",
    "you",
    "you're",
    "you've",
    "you'll",
    "you'd",
    "your",
    "yours",
    "yourself",
    "yourselves",
    "he",
    "him",
    "his",
    "himself",
    "she",
    "she's",
    "her",
    "hers",
    "herself",
    "it",
    "it's",
    "its",
    "itself",
    "they",
    "them",
    "their",
    "theirs",
    "themselves",
    "what",
    "which",
    "who",
    "whom",
    "this",
    "that",
    "that'll",
    "these",
    "those",
    "am",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "have",
    "has",
    "had",
    "having",
    "do",
    "does",
    "did",
    "doing",
    "a",
    "an",
    "the",
    "and",
    "but",
    "if",
    "or",
    "because",
    "as",
    "until",
    "while",
    "of",
    "at",
    "by",
    "for",
    "with",
    "about",
    "against",
    "between",
    "into",
    "through",
    "during",
    "before",
    "after",
    "above",
    "below",
    "to",
    "from",
    "up",
    "down",
    "in",
    "out",
    "on",
    "off",
    "over",
    "under",
    "again",
    "further",
    "then",
    "once",
    "here",
    "there",
    "when",
    "where",
    "why",
    "how",
    "all",
    "any",
    "both",
    "each",
    "few",
    "more",
    "most",
    "other",
    "some",
    "such",
    "no",
    "nor",
    "not",
    "only",
    "own",
    "same",
    "so",
    "than",
    "too",
    "very",
    "s",
    "t",
    "can",
    "will",
    "just",
    "don",
    "don't",
    "should",
    "should've",
    "now",
    "d",
    "ll",
    "m",
    "o",
    "re",
    "ve",
    "y",
    "ain",
    "aren",
    "aren't",
    "couldn",
    "couldn't",
    "didn",
    "didn't",
    "doesn",
    "doesn't",
    "hadn",
    "hadn't",
    "hasn",
    "hasn't",
    "haven",
    "haven't",
    "isn",
    "isn't",
    "ma",
    "mightn",
    "mightn't",
    "mustn",
    "mustn't",
    "needn",
    "needn't",
    "shan",
    "shan't",
    "shouldn",
    "shouldn't",
    "wasn",
    "wasn't",
    "weren",
    "weren't",
    "won",
    "won't",
    "wouldn",
    "wouldn't",
];

fn stop_words() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| STOP_WORDS.iter().copied().collect())
}

/// The stems of `text`'s words that are not stop words, in order.
fn stems(text: &str) -> Vec<String> {
    let stemmer = Stemmer::create(Algorithm::English);
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !stop_words().contains(w.as_str()))
        .map(|w| stemmer.stem(&w).into_owned())
        .collect()
}

/// A stem's index: `|murmur3_32(stem)|` read as a signed 32-bit number.
fn index(stem: &str) -> u32 {
    (murmur3_32(stem.as_bytes()) as i32).unsigned_abs()
}

/// The vector of a document (for points).
pub fn document(text: &str) -> SparseVector {
    let stems = stems(text);
    let len = stems.len() as f32;
    let mut tf: BTreeMap<u32, f32> = BTreeMap::new();
    for s in &stems {
        *tf.entry(index(s)).or_default() += 1.0;
    }
    let norm = K * (1.0 - B + B * len / AVG_LEN);
    let (indices, values) = tf
        .into_iter()
        .map(|(i, f)| (i, f * (K + 1.0) / (f + norm)))
        .unzip();
    SparseVector { indices, values }
}

/// The vector of a query: 1 for each distinct stem.
pub fn query(text: &str) -> SparseVector {
    let indices: std::collections::BTreeSet<u32> = stems(text).iter().map(|s| index(s)).collect();
    SparseVector {
        values: vec![1.0; indices.len()],
        indices: indices.into_iter().collect(),
    }
}

/// MurmurHash3's 32-bit hash with seed 0.
fn murmur3_32(data: &[u8]) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mix = |k: u32| k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    let mut h: u32 = 0;
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        h = (h ^ mix(k))
            .rotate_left(13)
            .wrapping_mul(5)
            .wrapping_add(0xe654_6b64);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let k = tail
            .iter()
            .enumerate()
            .fold(0u32, |k, (i, &b)| k | u32::from(b) << (8 * i));
        h ^= mix(k);
    }
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Reference {
        text: String,
        document: SparseVector,
        query: SparseVector,
    }

    fn sorted(v: &SparseVector) -> Vec<(u32, f32)> {
        let mut pairs: Vec<(u32, f32)> = v
            .indices
            .iter()
            .copied()
            .zip(v.values.iter().copied())
            .collect();
        pairs.sort_by_key(|p| p.0);
        pairs
    }

    /// `testdata/bm25_reference.json` was written by `tests/python/bm25_reference.py` with
    /// Qdrant's own engine (`qdrant_edge`).
    #[test]
    fn vectors_equal_qdrants_own_bm25() {
        let all: Vec<Reference> =
            serde_json::from_str(include_str!("../../testdata/bm25_reference.json")).unwrap();
        assert!(all.len() >= 8);
        for r in &all {
            let (doc, want) = (sorted(&document(&r.text)), sorted(&r.document));
            assert_eq!(doc.len(), want.len(), "{:?}: {doc:?} vs {want:?}", r.text);
            for ((i, v), (wi, wv)) in doc.iter().zip(&want) {
                assert_eq!(i, wi, "{:?}", r.text);
                assert!((v - wv).abs() < 1e-5, "{:?}: {v} vs {wv}", r.text);
            }
            assert_eq!(sorted(&query(&r.text)), sorted(&r.query), "{:?}", r.text);
        }
    }

    #[test]
    fn murmur3_matches_its_published_vectors() {
        assert_eq!(murmur3_32(b""), 0);
        assert_eq!(murmur3_32(b"hello"), 0x248b_fa47);
        assert_eq!(
            murmur3_32(b"The quick brown fox jumps over the lazy dog"),
            0x2e4f_f723
        );
    }
}
