"""Times sentence-transformers embedding TEXTS texts with all-MiniLM-L6-v2 on CPU at each batch
size, median of ROUNDS, and prints {"batch": texts per second, ...} as one JSON line, for
router/benches/embed.rs to set beside vecgate's built-in embedder. The texts are the bench's own
(`passage N` sentences of about 40 tokens), so both sides embed the same.

Usage: python minilm_bench.py MODEL_DIR TEXTS ROUNDS BATCH [BATCH ...]
"""
import json
import statistics
import sys
import time

import torch
from sentence_transformers import SentenceTransformer

model_dir, n, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
batches = [int(b) for b in sys.argv[4:]]
texts = [
    f"passage {i}: vector search routes queries across shards, caches answers and merges the top results for retrieval-augmented generation"
    for i in range(n)
]
model = SentenceTransformer(model_dir, device="cpu")
model.encode(texts[:8])
out = {}
with torch.inference_mode():
    for b in batches:
        rates = []
        for _ in range(rounds):
            started = time.perf_counter()
            model.encode(texts, batch_size=b, normalize_embeddings=True)
            rates.append(n / (time.perf_counter() - started))
        out[str(b)] = statistics.median(rates)
print(json.dumps(out))
