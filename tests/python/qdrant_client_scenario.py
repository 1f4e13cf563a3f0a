"""Drives a Qdrant-compatible server through the unchanged Python qdrant-client and prints
what it read back as one JSON document, so a test can compare servers (a vecgate cluster and a
single shardd). Exits non-zero on any client error or warning.

Usage: python qdrant_client_scenario.py URL
"""
import json
import sys
import uuid
import warnings

from qdrant_client import QdrantClient, models

warnings.simplefilter("error")
client = QdrantClient(url=sys.argv[1], prefer_grpc=False, timeout=30)
name = "client_scenario"
out = {"version": client.info().version}

if client.collection_exists(name):
    client.delete_collection(name)
client.create_collection(name, vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE))
points = [
    models.PointStruct(
        id=i if i % 2 else str(uuid.UUID(int=i)),
        vector=[(i % 3) + 0.1, 1.0, (i * 7) % 5, 0.5 + i / 100],
        payload={"n": i, "tag": "even" if i % 2 == 0 else "odd", "city": ["Berlin", "London", "Paris"][i % 3]},
    )
    for i in range(60)
]
out["upsert"] = client.upsert(name, points=points, wait=True).status.value
client.upload_collection(name, vectors=[[1.0, 0.0, 0.0, float(i)] for i in range(10)], ids=list(range(1000, 1010)),
                         payload=[{"n": 1000 + i, "tag": "bulk"} for i in range(10)], wait=True)
info = client.get_collection(name)
out["info"] = {"points": info.points_count, "size": info.config.params.vectors.size, "distance": info.config.params.vectors.distance.value}
odd = models.Filter(must=[models.FieldCondition(key="tag", match=models.MatchValue(value="odd"))])
res = client.query_points(name, query=[1.0, 0.5, 0.0, 0.2], limit=5, query_filter=odd, with_payload=True)
out["query"] = [[str(p.id), round(p.score, 5), p.payload] for p in res.points]
res = client.query_points(name, query=[0.2, 1.0, 3.0, 0.5], limit=4, offset=2, with_vectors=True,
                          query_filter=models.Filter(should=[models.FieldCondition(key="city", match=models.MatchAny(any=["Paris", "Berlin"]))],
                                                     must_not=[models.FieldCondition(key="n", range=models.Range(gte=40))]))
out["query_offset"] = [[str(p.id), round(p.score, 5), [round(x, 5) for x in p.vector]] for p in res.points]
batch = client.query_batch_points(name, requests=[models.QueryRequest(query=[1, 0, 0, 0], limit=2), models.QueryRequest(query=[0, 0, 1, 0], limit=3, filter=odd)])
out["batch"] = [[str(p.id) for p in r.points] for r in batch]
out["count"] = client.count(name, exact=True).count
out["count_odd"] = client.count(name, count_filter=odd).count
ids, offset = [], None
while True:
    page, offset = client.scroll(name, limit=7, offset=offset, with_payload=False)
    ids += [str(p.id) for p in page]
    if offset is None:
        break
out["scroll"] = ids
out["retrieve"] = [[str(r.id), r.payload] for r in client.retrieve(name, ids=[1, 3, str(uuid.UUID(int=4))])]
client.set_payload(name, payload={"seen": True}, points=[1, 3])
client.overwrite_payload(name, payload={"only": 1}, points=[5])
client.delete(name, points_selector=models.PointIdsList(points=[7, 9]))
client.delete(name, points_selector=models.FilterSelector(filter=models.Filter(must=[models.FieldCondition(key="tag", match=models.MatchValue(value="bulk"))])))
out["after_writes"] = [[str(r.id), r.payload] for r in client.retrieve(name, ids=[1, 3, 5, 7, 1000])]
out["count_after"] = client.count(name).count
client.delete_collection(name)
out["exists_after_drop"] = client.collection_exists(name)
print(json.dumps(out, sort_keys=True))
