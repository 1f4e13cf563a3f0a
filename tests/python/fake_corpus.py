"""The corpus and deterministic fake embeddings the client scenarios share: hashed words,
so nothing is downloaded and every run (and every server) sees the same vectors."""
import hashlib

TOPICS = ["physics", "biology", "history", "music"]
WORDS = ["quantum", "cells", "empire", "melody", "energy", "genes", "battle", "rhythm", "field", "protein"]
TEXTS = [f"{TOPICS[i % 4]} note {i} about {WORDS[i % 10]} and {WORDS[(i * 3) % 10]}" for i in range(48)]
METADATAS = [{"topic": TOPICS[i % 4], "year": 2000 + i % 25, "i": i} for i in range(48)]
QUERY = "physics note about quantum energy"


def word_hash(word: str) -> int:
    return int(hashlib.sha256(word.encode()).hexdigest(), 16)


def dense(text: str) -> list[float]:
    """16 dimensions; each word adds to two of them."""
    v = [0.0] * 16
    for w in text.lower().split():
        h = word_hash(w)
        v[h % 16] += 1.0
        v[(h >> 8) % 16] += 0.5
    return v


def sparse(text: str) -> tuple[list[int], list[float]]:
    """Word counts in 1,000 hashed dimensions, as (indices, values) sorted by index."""
    counts: dict[int, float] = {}
    for w in text.lower().split():
        i = word_hash(w) % 1000
        counts[i] = counts.get(i, 0.0) + 1.0
    ordered = sorted(counts)
    return ordered, [counts[i] for i in ordered]
