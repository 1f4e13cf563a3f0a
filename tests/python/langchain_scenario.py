"""Drives a Qdrant-compatible server through LangChain's QdrantVectorStore, unchanged, in
DENSE, SPARSE and HYBRID modes, with deterministic hashed embeddings (nothing is downloaded),
and prints what it read back as one JSON document, so a test can compare servers.

Usage: python langchain_scenario.py URL
"""
import json
import sys
import uuid
import warnings

from langchain_core.embeddings import Embeddings
from langchain_qdrant import QdrantVectorStore, RetrievalMode, SparseEmbeddings, SparseVector
from qdrant_client import models

from fake_corpus import METADATAS as metadatas, QUERY as query, TEXTS as texts, dense, sparse

warnings.simplefilter("error")
URL = sys.argv[1]


class HashEmbeddings(Embeddings):
    """Dense fake embeddings (fake_corpus.dense)."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [dense(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return dense(text)


class HashSparse(SparseEmbeddings):
    """Sparse fake embeddings (fake_corpus.sparse)."""

    def embed_documents(self, texts: list[str]) -> list[SparseVector]:
        return [self.embed_query(t) for t in texts]

    def embed_query(self, text: str) -> SparseVector:
        indices, values = sparse(text)
        return SparseVector(indices=indices, values=values)


ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, t)) for t in texts]
biology_recent = models.Filter(must=[
    models.FieldCondition(key="metadata.topic", match=models.MatchValue(value="biology")),
    models.FieldCondition(key="metadata.year", range=models.Range(gte=2010)),
])


def scored(pairs):
    return [[d.metadata["i"], round(s, 5)] for d, s in pairs]


out = {}
for mode in [RetrievalMode.DENSE, RetrievalMode.SPARSE, RetrievalMode.HYBRID]:
    name = f"lc_{mode.value}"
    kwargs = {
        "embedding": None if mode == RetrievalMode.SPARSE else HashEmbeddings(),
        "sparse_embedding": None if mode == RetrievalMode.DENSE else HashSparse(),
        "retrieval_mode": mode,
        "url": URL,
        "collection_name": name,
    }
    store = QdrantVectorStore.from_texts(texts, metadatas=metadatas, ids=ids, force_recreate=True, **kwargs)
    result = {
        "search": scored(store.similarity_search_with_score(query, k=5)),
        "filtered": [d.metadata for d in store.similarity_search(query, k=5, filter=biology_recent)],
    }
    if mode == RetrievalMode.DENSE:
        result["mmr"] = [d.metadata["i"] for d in store.max_marginal_relevance_search(query, k=4, fetch_k=20, lambda_mult=0.5)]
    store.delete(ids=ids[:4])
    result["after_delete"] = scored(store.similarity_search_with_score(query, k=5))
    result["get_by_ids"] = sorted(d.metadata["i"] for d in store.get_by_ids(ids[:8]))
    existing = QdrantVectorStore.from_existing_collection(**kwargs)
    result["existing"] = scored(existing.similarity_search_with_score(query, k=5))
    out[mode.value] = result
print(json.dumps(out, sort_keys=True))
