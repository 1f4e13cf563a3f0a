"""hnswlib side of the HNSW benchmark: builds and queries hnswlib on the vectors the Rust
bench wrote, and prints recall@10 and single-thread queries/s per ef as JSON."""
import argparse
import json
import statistics
import time

import hnswlib
import numpy as np

p = argparse.ArgumentParser()
p.add_argument("--dir", required=True)
p.add_argument("--n", type=int, required=True)
p.add_argument("--dim", type=int, required=True)
p.add_argument("--queries", type=int, required=True)
p.add_argument("--m", type=int, required=True)
p.add_argument("--ef-construct", type=int, required=True)
p.add_argument("--runs", type=int, required=True)
p.add_argument("--ef", required=True)
a = p.parse_args()

base = np.fromfile(f"{a.dir}/base.f32", dtype="<f4").reshape(a.n, a.dim)
queries = np.fromfile(f"{a.dir}/queries.f32", dtype="<f4").reshape(a.queries, a.dim)
truth = np.fromfile(f"{a.dir}/gt.u32", dtype="<u4").reshape(a.queries, 10)

index = hnswlib.Index(space="l2", dim=a.dim)
index.init_index(max_elements=a.n, M=a.m, ef_construction=a.ef_construct, random_seed=42)
started = time.perf_counter()
index.add_items(base, np.arange(a.n), num_threads=2)
build = time.perf_counter() - started

index.set_num_threads(1)
rows = []
for ef in [int(x) for x in a.ef.split(",")]:
    index.set_ef(ef)
    timings = []
    labels = None
    for _ in range(a.runs):
        started = time.perf_counter()
        labels, _ = index.knn_query(queries, k=10, num_threads=1)
        timings.append(a.queries / (time.perf_counter() - started))
    found = sum(len(set(labels[i]) & set(truth[i])) for i in range(a.queries))
    rows.append({"ef": ef, "recall": found / (a.queries * 10), "qps": statistics.median(timings)})

print(json.dumps({"build_seconds": build, "rows": rows}))
