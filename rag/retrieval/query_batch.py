"""One encoder pass for a batch of questions (`rag search --queries`, `rag eval`).

NumpyQueryEncoder runs a question at a time: each linear layer is a (tokens x hidden)
by (hidden x out) product of some forty rows, where BLAS runs far below its peak, and
Python pays the per-layer overhead once per question. Here the questions' tokens are
packed into one matrix (no padding: every linear layer, norm and activation works row by
row, so rows of different questions never mix); only attention is per question, on its
own rows. Same arithmetic as the one-at-a-time pass, so the same vectors up to float
rounding. BERT and XLM-RoBERTa layouts (e5, LaBSE-like); ModernBERT stays one at a time.
"""
from __future__ import annotations

import math

import numpy as np

# Rows per block of the feed-forward part: big enough for BLAS to run near its peak,
# small enough that the (rows x 4 hidden) float64 temporaries of GELU stay in cache
# (the whole batch at once was slower than one question at a time on a busy machine).
ROWS = 256


def encode_packed(enc, token_ids: list[list[int]]) -> np.ndarray:
    """Normalised vectors for the token id lists, one pass over all of them."""
    lengths = [len(t) for t in token_ids]
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = np.fromiter((i for t in token_ids for i in t), dtype=np.int64, count=int(starts[-1]))
    x = _embeddings(enc, ids, lengths)
    h, d = enc.heads, enc.dimension // enc.heads
    scale = np.float32(math.sqrt(d))
    for layer in range(enc.layers):
        p = f"encoder.layer.{layer}."
        q = enc._linear(x, p + "attention.self.query")
        k = enc._linear(x, p + "attention.self.key")
        v = enc._linear(x, p + "attention.self.value")
        context = np.empty_like(q)
        for a, b in zip(starts[:-1], starts[1:]):
            n = b - a
            qs = q[a:b].reshape(n, h, d).transpose(1, 0, 2)
            ks = k[a:b].reshape(n, h, d).transpose(1, 0, 2)
            vs = v[a:b].reshape(n, h, d).transpose(1, 0, 2)
            scores = qs @ ks.transpose(0, 2, 1) / scale
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            context[a:b] = (scores @ vs).transpose(1, 0, 2).reshape(n, h * d)
        x = np.concatenate([_feed_forward(enc, p, x[a:a + ROWS], context[a:a + ROWS])
                            for a in range(0, len(x), ROWS)])
    out = np.zeros((len(token_ids), enc.dimension), dtype=np.float32)
    for i, (a, b) in enumerate(zip(starts[:-1], starts[1:])):
        vec = x[a] if enc.pooling == "cls" else x[a:b].mean(axis=0)
        out[i] = vec / max(float(np.linalg.norm(vec)), 1e-12)
    return out


def _feed_forward(enc, p: str, x: np.ndarray, context: np.ndarray) -> np.ndarray:
    """Attention output, its norm and the feed-forward block on a block of rows."""
    x = enc._norm(x + enc._linear(context, p + "attention.output.dense"),
                  p + "attention.output.LayerNorm")
    inner = _activation(enc, enc._linear(x, p + "intermediate.dense"))
    return enc._norm(x + enc._linear(inner, p + "output.dense"), p + "output.LayerNorm")


def _activation(enc, x: np.ndarray) -> np.ndarray:
    """GELU with erf evaluated in float32 (the encoder's own is float64: twice the memory
    traffic, and the vectors differ by about 1e-7, far inside the 1e-4 the index check
    allows); other activations as the encoder has them."""
    if enc.act != "gelu":
        return enc._activation(x)
    u = x / np.float32(math.sqrt(2.0))
    z = np.abs(u)
    t = np.float32(1.0) / (np.float32(1.0) + np.float32(0.3275911) * z)
    poly = t * (np.float32(0.254829592) + t * (np.float32(-0.284496736) + t * (
        np.float32(1.421413741) + t * (np.float32(-1.453152027) + t * np.float32(1.061405429)))))
    erf = np.copysign(np.float32(1.0) - poly * np.exp(-z * z), u)
    return np.float32(0.5) * x * (np.float32(1.0) + erf)


def _embeddings(enc, ids: np.ndarray, lengths: list[int]) -> np.ndarray:
    word = enc._embed(ids, "embeddings.word_embeddings.weight")
    offset = enc.pad_id + 1 if enc.arch == "xlm-roberta" else 0
    positions = np.concatenate([np.arange(n) + offset for n in lengths])
    x = word + enc._get("embeddings.position_embeddings.weight")[positions]
    x = x + enc._get("embeddings.token_type_embeddings.weight")[0]
    return enc._norm(x, "embeddings.LayerNorm")
