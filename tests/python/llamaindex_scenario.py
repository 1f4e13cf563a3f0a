"""Drives a Qdrant-compatible server through LlamaIndex's QdrantVectorStore, unchanged, in its
default (dense) mode and with enable_hybrid=True (our own sparse functions), with deterministic
hashed embeddings (nothing is downloaded), and prints what it read back as one JSON document.

Usage: python llamaindex_scenario.py URL
"""
import json
import sys
import uuid

from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores.types import (
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)
from llama_index.vector_stores.qdrant import QdrantVectorStore
from qdrant_client import QdrantClient

from fake_corpus import METADATAS, QUERY as query, TEXTS as texts, dense, sparse

URL = sys.argv[1]


def sparse_batch(batch: list[str]) -> tuple[list[list[int]], list[list[float]]]:
    """LlamaIndex's sparse function shape over fake_corpus.sparse."""
    pairs = [sparse(t) for t in batch]
    return [p[0] for p in pairs], [p[1] for p in pairs]


client = QdrantClient(url=URL, timeout=30)
out = {}
for hybrid in [False, True]:
    name = f"li_{'hybrid' if hybrid else 'dense'}"
    if client.collection_exists(name):
        client.delete_collection(name)
    store = QdrantVectorStore(collection_name=name, client=client, enable_hybrid=hybrid, sparse_doc_fn=sparse_batch if hybrid else None, sparse_query_fn=sparse_batch if hybrid else None)
    nodes = [
        TextNode(
            id_=str(uuid.uuid5(uuid.NAMESPACE_URL, t)),
            text=t,
            metadata=METADATAS[i],
            embedding=dense(t),
            relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=f"doc{i % 6}")},
        )
        for i, t in enumerate(texts)
    ]
    store.add(nodes)
    mode = VectorStoreQueryMode.HYBRID if hybrid else VectorStoreQueryMode.DEFAULT

    def run(filters=None):
        q = VectorStoreQuery(query_embedding=dense(query), query_str=query, similarity_top_k=5, mode=mode, filters=filters)
        res = store.query(q)
        return [[n.metadata["i"], round(s, 5)] for n, s in zip(res.nodes, res.similarities)]

    result = {"search": run()}
    result["filtered"] = run(MetadataFilters(filters=[
        MetadataFilter(key="topic", value="biology"),
        MetadataFilter(key="year", value=2010, operator=FilterOperator.GTE),
    ]))
    if hybrid:
        q = VectorStoreQuery(query_embedding=dense(query), query_str=query, similarity_top_k=5, mode=VectorStoreQueryMode.SPARSE)
        res = store.query(q)
        result["sparse"] = [[n.metadata["i"], round(s, 5)] for n, s in zip(res.nodes, res.similarities)]
    store.delete(ref_doc_id="doc1")
    result["after_delete"] = run()
    result["count"] = client.count(name).count
    out[name] = result
print(json.dumps(out, sort_keys=True))
