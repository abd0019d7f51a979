"""Question embeddings without sentence-transformers: a BERT encoder in numpy.

A search embeds one or a few short questions. Loading sentence-transformers for that
costs 6-8 s of imports on a small machine (torch, transformers, scikit-learn) for a
forward pass that takes milliseconds. For the sentence-transformers models whose whole
pipeline is "encoder -> mean or CLS pooling -> normalise" with a BERT, XLM-RoBERTa or
ModernBERT encoder (multilingual-e5, ruri-v3, most Japanese BERT embedders, the test
models), this module runs the same computation with the `tokenizers` library (the
tokenizer.json the model ships), the weights read through `safetensors` (memory-mapped;
only the rows of the embedding matrix a question uses are touched) and numpy, in float32.
Anything else (another architecture, a Dense layer, remote code, a GPU device) returns
None from `load()`, and the caller uses sentence-transformers as before.
tests/test_query_encoder.py checks the vectors against sentence-transformers'; the
Retriever also checks, on load, that the encoder reproduces a vector stored in the index
(`matches()`), and uses sentence-transformers when it does not.

[search] query_encoder = "sentence-transformers" (RAG_QUERY_ENCODER) always uses
sentence-transformers (the Retriever does not ask this module then).
"""
from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import numpy as np

_TRANSFORMER, _POOLING, _NORMALIZE = "Transformer", "Pooling", "Normalize"
# Tokenizer classes whose tokenizer.json is the whole tokenizer (no Python-side
# normalisation added by transformers); checked against transformers in the tests.
# The tokenizer is tokenizer.json as the tokenizers library reads it; the Retriever's
# check against a stored vector catches a model whose transformers tokenizer differs.
_ARCHS = {"bert", "xlm-roberta", "modernbert"}
_ACTS = {"gelu", "gelu_new", "gelu_pytorch_tanh", "relu"}
_EMBEDDINGS = {"modernbert": "embeddings.tok_embeddings.weight"}


def _read_json(path: Path) -> dict | list | None:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None


def model_dir(name: str) -> Path | None:
    """The local directory of `name`: a path, or the cached snapshot of a Hub id."""
    if Path(name).is_dir():
        return Path(name)
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached: sentence-transformers will say why
        return None


class NumpyQueryEncoder:
    """Normalised sentence embeddings of a BERT-family sentence-transformers model."""

    def __init__(self, root: Path, config: dict, pooling: str, max_length: int,
                 lower: bool, tokenizer, weights, prefix: str):
        self.root, self.pooling, self.lower = root, pooling, lower
        self.tokenizer, self._w, self._prefix = tokenizer, weights, prefix
        self.keys = set(weights.keys())
        self.arch = config["model_type"]
        self.dimension = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("norm_eps" if self.arch == "modernbert" else
                                    "layer_norm_eps", 1e-5 if self.arch == "modernbert"
                                    else 1e-12))
        self.act = _activation(config)
        self.pad_id = int(config.get("pad_token_id") or 0)
        if self.arch == "modernbert":
            self.layer_kinds, self.thetas = _modernbert_layers(config)
            self.half_window = int(config.get("local_attention", 128)) // 2
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length)
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, name: str, *, device: str | None = None,
             trust_remote_code: bool = False) -> NumpyQueryEncoder | None:
        """The encoder for `name`, or None when its pipeline is not one this runs
        exactly (the caller then loads sentence-transformers)."""
        if trust_remote_code or (device not in (None, "", "cpu")):
            return None
        root = model_dir(name)
        if root is None:
            return None
        try:
            return cls._load(root)
        except (OSError, ValueError, KeyError, TypeError, ImportError):
            return None

    @classmethod
    def _load(cls, root: Path) -> NumpyQueryEncoder | None:
        modules = _read_json(root / "modules.json")
        if not isinstance(modules, list) or not modules:
            return None
        kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
        if kinds not in ([_TRANSFORMER, _POOLING], [_TRANSFORMER, _POOLING, _NORMALIZE]):
            return None
        body = root / (modules[0].get("path") or "")
        config = _read_json(body / "config.json") or {}
        if config.get("model_type") not in _ARCHS or _activation(config) not in _ACTS:
            return None
        if config.get("position_embedding_type", "absolute") != "absolute":
            return None
        if config["model_type"] == "modernbert" and _modernbert_layers(config) is None:
            return None
        pool = _read_json(root / (modules[1].get("path") or "") / "config.json") or {}
        # sentence-transformers 6 writes "pooling_mode": "mean"; earlier versions a flag
        # per mode ("pooling_mode_mean_tokens": true).
        modes = pool.get("pooling_mode")
        modes = [modes] if isinstance(modes, str) else [
            k.removeprefix("pooling_mode_") for k, v in pool.items()
            if k.startswith("pooling_mode_") and v]
        if modes in (["mean"], ["mean_tokens"]):
            pooling = "mean"
        elif modes in (["cls"], ["cls_token"]):
            pooling = "cls"
        else:
            return None
        width = pool.get("embedding_dimension", pool.get("word_embedding_dimension"))
        if width is not None and int(width) != int(config["hidden_size"]):
            return None
        tok_config = _read_json(body / "tokenizer_config.json") or {}
        if not (body / "tokenizer.json").is_file() or not (body / "model.safetensors").is_file():
            return None
        st_config = _read_json(body / "sentence_bert_config.json") or _read_json(
            root / "sentence_bert_config.json") or {}
        offset = cls._position_offset(config)
        limits = [int(config["max_position_embeddings"]) - offset]
        for value in (st_config.get("max_seq_length"), tok_config.get("model_max_length")):
            if isinstance(value, (int, float)) and 0 < value < 1_000_000:
                limits.append(int(value))
        from safetensors import safe_open
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(body / "tokenizer.json"))
        weights = safe_open(str(body / "model.safetensors"), framework="np")
        keys = set(weights.keys())
        table = _EMBEDDINGS.get(config["model_type"], "embeddings.word_embeddings.weight")
        prefix = next((p for p in ("", "bert.", "roberta.", "model.") if p + table in keys),
                      None)
        if prefix is None:
            return None
        return cls(root, config, pooling, min(limits), bool(st_config.get("do_lower_case")),
                   tokenizer, weights, prefix)

    @staticmethod
    def _position_offset(config: dict) -> int:
        return int(config.get("pad_token_id") or 0) + 1 if config.get(
            "model_type") == "xlm-roberta" else 0

    def _get(self, key: str) -> np.ndarray:
        if key not in self._cache:
            value = np.asarray(self._w.get_tensor(self._prefix + key), dtype=np.float32)
            # Linear weights are kept transposed, contiguous: x @ W.T without a strided read.
            self._cache[key] = np.ascontiguousarray(value.T) if (
                value.ndim == 2 and "embeddings" not in key) else value
        return self._cache[key]

    def _has(self, key: str) -> bool:
        return self._prefix + key in self.keys

    def matches(self, text: str, vector: np.ndarray, tolerance: float = 1e-4) -> bool:
        """Whether this encoder gives `vector` (as sentence-transformers stored it in the
        index) for `text`: the whole pipeline, tokenizer included, checked on real input."""
        ours = self.encode([text])[0]
        return ours.shape == vector.shape and float(np.abs(ours - vector).max()) <= tolerance

    # ------------------------------------------------------------------ encoding

    def encode(self, texts: list[str]) -> np.ndarray:
        """Normalised float32 vectors, one row per text. One call at a time (a server
        searches from several threads): the BLAS thread limit is process-wide, and
        two calls restoring it out of order would leave it at one thread for good."""
        with self._lock, _one_blas_thread():
            return self._encode(texts)

    def _encode(self, texts: list[str]) -> np.ndarray:
        if len(texts) > 1 and self.arch != "modernbert":    # one pass for the batch
            from .query_batch import encode_packed
            return encode_packed(self, [self.tokenizer.encode(
                t.lower() if self.lower else t).ids for t in texts])
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            ids = self.tokenizer.encode(text.lower() if self.lower else text).ids
            hidden = self._forward(np.asarray(ids, dtype=np.int64))
            vec = hidden[0] if self.pooling == "cls" else hidden.mean(axis=0)
            norm = float(np.linalg.norm(vec))
            out[i] = vec / max(norm, 1e-12)
        return out

    def _embed(self, ids: np.ndarray, table: str) -> np.ndarray:
        rows = self._w.get_slice(self._prefix + table)
        return np.stack([np.asarray(rows[int(i):int(i) + 1], dtype=np.float32)[0] for i in ids])

    def _forward(self, ids: np.ndarray) -> np.ndarray:
        if self.arch == "modernbert":
            return self._forward_modernbert(ids)
        n = len(ids)
        word = self._embed(ids, "embeddings.word_embeddings.weight")
        if self.arch == "xlm-roberta":
            positions = np.arange(n) + self.pad_id + 1
        else:
            positions = np.arange(n)
        x = word + self._get("embeddings.position_embeddings.weight")[positions]
        x = x + self._get("embeddings.token_type_embeddings.weight")[0]
        x = self._norm(x, "embeddings.LayerNorm")
        h, d = self.heads, self.dimension // self.heads
        for layer in range(self.layers):
            p = f"encoder.layer.{layer}."
            q = self._linear(x, p + "attention.self.query").reshape(n, h, d).transpose(1, 0, 2)
            k = self._linear(x, p + "attention.self.key").reshape(n, h, d).transpose(1, 0, 2)
            v = self._linear(x, p + "attention.self.value").reshape(n, h, d).transpose(1, 0, 2)
            scores = q @ k.transpose(0, 2, 1) / np.float32(math.sqrt(d))
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(1, 0, 2).reshape(n, h * d)
            x = self._norm(x + self._linear(context, p + "attention.output.dense"),
                           p + "attention.output.LayerNorm")
            inner = self._activation(self._linear(x, p + "intermediate.dense"))
            x = self._norm(x + self._linear(inner, p + "output.dense"), p + "output.LayerNorm")
        return x

    def _forward_modernbert(self, ids: np.ndarray) -> np.ndarray:
        """transformers' ModernBertModel: pre-norm layers, rotary positions (a theta per
        layer kind), a sliding window on the local layers, a gated MLP, a final norm."""
        n = len(ids)
        x = self._norm(self._embed(ids, "embeddings.tok_embeddings.weight"), "embeddings.norm")
        h, d = self.heads, self.dimension // self.heads
        distance = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :])
        local = np.where(distance <= self.half_window, 0.0, -np.inf).astype(np.float32)
        rotary = {kind: _rotary(n, d, theta) for kind, theta in self.thetas.items()}
        for layer in range(self.layers):
            p = f"layers.{layer}."
            kind = self.layer_kinds[layer]
            normed = x if layer == 0 else self._norm(x, p + "attn_norm")
            qkv = self._linear(normed, p + "attn.Wqkv").reshape(n, 3, h, d).transpose(1, 2, 0, 3)
            cos, sin = rotary[kind]
            q = qkv[0] * cos + _rotate_half(qkv[0]) * sin
            k = qkv[1] * cos + _rotate_half(qkv[1]) * sin
            scores = q @ k.transpose(0, 2, 1) * np.float32(d ** -0.5)
            if kind == "sliding_attention":
                scores = scores + local
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ qkv[2]).transpose(1, 0, 2).reshape(n, h * d)
            x = x + self._linear(context, p + "attn.Wo")
            inner, gate = np.split(self._linear(self._norm(x, p + "mlp_norm"), p + "mlp.Wi"), 2,
                                   axis=-1)
            x = x + self._linear(self._activation(inner) * gate, p + "mlp.Wo")
        return self._norm(x, "final_norm")

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        y = x @ self._get(name + ".weight")
        return y + self._get(name + ".bias") if self._has(name + ".bias") else y

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        y = (x - mean) / np.sqrt(var + self.eps) * self._get(name + ".weight")
        return y + self._get(name + ".bias") if self._has(name + ".bias") else y

    def _activation(self, x: np.ndarray) -> np.ndarray:
        if self.act == "relu":
            return np.maximum(x, 0)
        if self.act == "gelu":
            return 0.5 * x * (1.0 + _erf(x / np.float32(math.sqrt(2.0))))
        return 0.5 * x * (1.0 + np.tanh(np.float32(math.sqrt(2.0 / math.pi)) * (
            x + 0.044715 * x ** 3)))


def _activation(config: dict) -> str:
    if config.get("model_type") == "modernbert":
        return config.get("hidden_activation", "gelu")
    return config.get("hidden_act", "gelu")


def _modernbert_layers(config: dict) -> tuple[list[str], dict[str, float]] | None:
    """(each layer's kind, rotary theta per kind) from a ModernBERT config in either the
    transformers 5 form (layer_types, rope_parameters) or the Hub's older one
    (global_attn_every_n_layers, global_rope_theta, local_rope_theta); None for rotary
    scalings this does not implement."""
    n = int(config["num_hidden_layers"])
    kinds = config.get("layer_types") or [
        "sliding_attention" if i % int(config.get("global_attn_every_n_layers", 3))
        else "full_attention" for i in range(n)]
    rope = config.get("rope_parameters") or {}
    thetas = {}
    for kind, old, default in (("full_attention", "global_rope_theta", 160_000.0),
                               ("sliding_attention", "local_rope_theta", 10_000.0)):
        params = rope.get(kind) or {}
        if params.get("rope_type", "default") != "default" or config.get("rope_scaling"):
            return None
        thetas[kind] = float(params.get("rope_theta") or config.get(old) or default)
    return list(kinds), thetas


def _rotary(n: int, d: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    inv = 1.0 / (theta ** (np.arange(0, d, 2, dtype=np.float32) / d))
    freqs = np.arange(n, dtype=np.float32)[:, None] * inv.astype(np.float32)[None, :]
    emb = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)


def _rotate_half(x: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def _one_blas_thread():
    """A question's matrices are small (tokens x hidden): BLAS threads cost more than they
    give, and on a busy 2-core machine OpenBLAS's spinning threads made one question take
    1.4 s instead of 0.03 s. threadpoolctl comes with scikit-learn; without it, as is."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _erf(x: np.ndarray) -> np.ndarray:
    """erf in float64 to about 1e-7 (Abramowitz & Stegun 7.1.26), below float32's
    resolution of the GELU it feeds; numpy has no erf and scipy costs an import."""
    z = np.abs(x).astype(np.float64)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (
        -1.453152027 + t * 1.061405429))))
    y = 1.0 - poly * np.exp(-z * z)
    return (np.sign(x) * y).astype(np.float32)
