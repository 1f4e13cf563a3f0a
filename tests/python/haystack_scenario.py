"""Drives a Qdrant-compatible server through Haystack's QdrantDocumentStore and retrievers,
unchanged: dense, and sparse with idf (use_sparse_embeddings=True, sparse_idf=True) with the
hybrid retriever, with deterministic hashed embeddings (nothing is downloaded). Prints what it
read back as one JSON document.

Usage: python haystack_scenario.py URL
"""
import hashlib
import json
import sys
import uuid

from haystack import Document
from haystack.dataclasses import SparseEmbedding
from haystack_integrations.components.retrievers.qdrant import (
    QdrantEmbeddingRetriever,
    QdrantHybridRetriever,
    QdrantSparseEmbeddingRetriever,
)
from haystack_integrations.document_stores.qdrant import QdrantDocumentStore

URL = sys.argv[1]


def word_hash(word: str) -> int:
    return int(hashlib.sha256(word.encode()).hexdigest(), 16)


def dense(text: str) -> list[float]:
    v = [0.0] * 16
    for w in text.lower().split():
        h = word_hash(w)
        v[h % 16] += 1.0
        v[(h >> 8) % 16] += 0.5
    return v


def sparse(text: str) -> SparseEmbedding:
    counts: dict[int, float] = {}
    for w in text.lower().split():
        i = word_hash(w) % 1000
        counts[i] = counts.get(i, 0.0) + 1.0
    ordered = sorted(counts)
    return SparseEmbedding(indices=ordered, values=[counts[i] for i in ordered])


TOPICS = ["physics", "biology", "history", "music"]
WORDS = ["quantum", "cells", "empire", "melody", "energy", "genes", "battle", "rhythm", "field", "protein"]
texts = [f"{TOPICS[i % 4]} note {i} about {WORDS[i % 10]} and {WORDS[(i * 3) % 10]}" for i in range(48)]
query = "physics note about quantum energy"
biology_recent = {
    "operator": "AND",
    "conditions": [
        {"field": "meta.topic", "operator": "==", "value": "biology"},
        {"field": "meta.year", "operator": ">=", "value": 2010},
    ],
}


def hits(result):
    return [[d.meta["i"], round(d.score, 5)] for d in result["documents"]]


out = {}
for use_sparse in [False, True]:
    name = f"hs_{'sparse' if use_sparse else 'dense'}"
    store = QdrantDocumentStore(
        url=URL, index=name, embedding_dim=16, similarity="cosine", recreate_index=True,
        use_sparse_embeddings=use_sparse, sparse_idf=use_sparse, progress_bar=False, scroll_size=7,
        payload_fields_to_index=[{"field_name": "meta.topic", "field_schema": "keyword"}],
    )
    docs = [
        Document(
            id=str(uuid.uuid5(uuid.NAMESPACE_URL, t)),
            content=t,
            meta={"topic": TOPICS[i % 4], "year": 2000 + i % 25, "i": i},
            embedding=dense(t),
            sparse_embedding=sparse(t) if use_sparse else None,
        )
        for i, t in enumerate(texts)
    ]
    store.write_documents(docs)
    result = {"count": store.count_documents()}
    result["filter_documents"] = sorted(d.meta["i"] for d in store.filter_documents(filters=biology_recent))
    result["dense"] = hits(QdrantEmbeddingRetriever(document_store=store, top_k=5).run(query_embedding=dense(query)))
    result["dense_filtered"] = hits(QdrantEmbeddingRetriever(document_store=store, top_k=5).run(query_embedding=dense(query), filters=biology_recent))
    if use_sparse:
        result["sparse"] = hits(QdrantSparseEmbeddingRetriever(document_store=store, top_k=5).run(query_sparse_embedding=sparse(query)))
        result["hybrid"] = hits(QdrantHybridRetriever(document_store=store, top_k=5).run(query_embedding=dense(query), query_sparse_embedding=sparse(query)))
    store.delete_documents([d.id for d in docs[:6]])
    result["count_after_delete"] = store.count_documents()
    result["all_after_delete"] = sorted(d.meta["i"] for d in store.filter_documents())
    out[name] = result
print(json.dumps(out, sort_keys=True))
