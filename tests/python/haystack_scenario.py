"""Drives a Qdrant-compatible server through Haystack's QdrantDocumentStore and retrievers,
unchanged: dense, and sparse with idf (use_sparse_embeddings=True, sparse_idf=True) with the
hybrid retriever, with deterministic hashed embeddings (nothing is downloaded). Prints what it
read back as one JSON document.

Usage: python haystack_scenario.py URL
"""
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

from fake_corpus import METADATAS, QUERY as query, TEXTS as texts, dense, sparse

URL = sys.argv[1]


def sparse_embedding(text: str) -> SparseEmbedding:
    indices, values = sparse(text)
    return SparseEmbedding(indices=indices, values=values)


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
            meta=METADATAS[i],
            embedding=dense(t),
            sparse_embedding=sparse_embedding(t) if use_sparse else None,
        )
        for i, t in enumerate(texts)
    ]
    store.write_documents(docs)
    result = {"count": store.count_documents()}
    result["filter_documents"] = sorted(d.meta["i"] for d in store.filter_documents(filters=biology_recent))
    result["dense"] = hits(QdrantEmbeddingRetriever(document_store=store, top_k=5).run(query_embedding=dense(query)))
    result["dense_filtered"] = hits(QdrantEmbeddingRetriever(document_store=store, top_k=5).run(query_embedding=dense(query), filters=biology_recent))
    if use_sparse:
        result["sparse"] = hits(QdrantSparseEmbeddingRetriever(document_store=store, top_k=5).run(query_sparse_embedding=sparse_embedding(query)))
        result["hybrid"] = hits(QdrantHybridRetriever(document_store=store, top_k=5).run(query_embedding=dense(query), query_sparse_embedding=sparse_embedding(query)))
    store.delete_documents([d.id for d in docs[:6]])
    result["count_after_delete"] = store.count_documents()
    result["all_after_delete"] = sorted(d.meta["i"] for d in store.filter_documents())
    out[name] = result
print(json.dumps(out, sort_keys=True))
