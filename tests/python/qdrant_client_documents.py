"""Drives vecgate through the unchanged Python qdrant-client with text only: points upserted
with `models.Document` vectors (dense, and sparse with `qdrant/bm25`) and queried with
`models.Document` in dense, sparse and hybrid (RRF) queries, the router embedding them
(`cloud_inference=True` is how qdrant-client sends Documents to the server, as with Qdrant
Cloud). Prints the top ids of each query as one JSON document.

Usage: python qdrant_client_documents.py URL MODEL
"""
import json
import sys
import warnings

from qdrant_client import QdrantClient, models

warnings.simplefilter("error")
url, model = sys.argv[1], sys.argv[2]
client = QdrantClient(url=url, prefer_grpc=False, timeout=30, cloud_inference=True)
name = "documents"
if client.collection_exists(name):
    client.delete_collection(name)
client.create_collection(
    name,
    vectors_config={"dense": models.VectorParams(size=8, distance=models.Distance.COSINE)},
    sparse_vectors_config={"bm25": models.SparseVectorParams(modifier=models.Modifier.IDF)},
)
texts = [f"passage {i} about subject {i % 5}" for i in range(40)]
client.upsert(
    name,
    points=[
        models.PointStruct(
            id=i,
            vector={"dense": models.Document(text=t, model=model), "bm25": models.Document(text=t, model="qdrant/bm25")},
            payload={"text": t},
        )
        for i, t in enumerate(texts)
    ],
    wait=True,
)
out = {}
res = client.query_points(name, query=models.Document(text=texts[7], model=model), using="dense", limit=3)
out["dense"] = [p.id for p in res.points]
res = client.query_points(
    name,
    prefetch=[models.Prefetch(query=models.Document(text=texts[11], model=model), using="dense", limit=10)],
    query=models.Document(text=texts[11], model=model),
    using="dense",
    limit=3,
)
out["prefetched"] = [p.id for p in res.points]
res = client.query_points(name, query=models.Document(text="passage 23", model="qdrant/bm25"), using="bm25", limit=3)
out["sparse"] = [p.id for p in res.points]
res = client.query_points(
    name,
    prefetch=[
        models.Prefetch(query=models.Document(text=texts[31], model=model), using="dense", limit=10),
        models.Prefetch(query=models.Document(text="passage 31", model="qdrant/bm25"), using="bm25", limit=10),
    ],
    query=models.FusionQuery(fusion=models.Fusion.RRF),
    limit=3,
)
out["hybrid"] = [p.id for p in res.points]
print(json.dumps(out))
