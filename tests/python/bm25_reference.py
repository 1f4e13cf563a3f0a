"""Writes the reference BM25 vectors vecgate's own BM25 is checked against: Qdrant's `qdrant/bm25`
(its default config) as `qdrant_edge` (pip package `qdrant-edge-py`, Qdrant's own engine) computes
them, for document and query embeddings of a handful of sentences.

Usage: python bm25_reference.py > router/testdata/bm25_reference.json
"""
import json

import qdrant_edge

SENTENCES = [
    "The quick brown foxes are jumping over the lazy dogs!",
    "Don't stop believing, it's 2024!",
    "Café au lait — naïve résumé",
    "state-of-the-art e-mail foo_bar x1y2",
    "UPPER lower MiXeD ÉCOLE Straße",
    "running runs ran runner, running again",
    "日本語 テキスト and numbers 3.14159 42",
    "Vector databases route queries across shards; replicas answer when a shard is slow.",
    "How do I configure the cache TTL for a collection?",
    "",
]

bm25 = qdrant_edge.Bm25(qdrant_edge.Bm25Config())
out = []
for s in SENTENCES:
    doc, query = bm25.embed_document(s), bm25.embed_query(s)
    out.append({
        "text": s,
        "document": {"indices": list(doc.indices), "values": [float(v) for v in doc.values]},
        "query": {"indices": list(query.indices), "values": [float(v) for v in query.values]},
    })
print(json.dumps(out, ensure_ascii=False, indent=1))
