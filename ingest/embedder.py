"""Dense embeddings with sentence-transformers, using each model's own prefixes."""
from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .attention import use_shape_agnostic_attention
from .errors import RagError

# Retrieval models are trained with these query/passage prefixes; without them
# quality drops (the e5 FAQ warns about it). Matched against the model name.
KNOWN_PREFIXES: list[tuple[str, str, str]] = [
    ("ruri-v3", "検索クエリ: ", "検索文書: "),
    ("ruri-", "クエリ: ", "文章: "),            # ruri v1/v2
    ("multilingual-e5", "query: ", "passage: "),
    ("e5-", "query: ", "passage: "),
    ("glucose-base-ja-v2", "query: ", "passage: "),
]
DEFAULT_EMBEDDER = "cl-nagoya/ruri-v3-30m"


class EmbedderError(RagError):
    pass


@dataclass
class EmbedderInfo:
    """What the manifest records about the embedder; compared on every search."""
    name: str
    revision: str          # hub commit or a fingerprint of the local weights
    dimension: int
    query_prefix: str
    passage_prefix: str
    max_tokens: int
    dtype: str = "float32"     # what passages were embedded in: float32 | bfloat16

    def to_dict(self) -> dict:
        return asdict(self)


def known_prefixes(name: str) -> tuple[str, str] | None:
    low = name.lower()
    for key, q, p in KNOWN_PREFIXES:
        if key in low:
            return q, p
    return None


def _fingerprint(path: Path) -> str:
    """Identify local weights cheaply: names, sizes and the head and tail of each file."""
    h = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        if f.is_file() and f.suffix in {".safetensors", ".json", ".bin", ".model", ".txt"}:
            size = f.stat().st_size
            h.update(f"{f.relative_to(path).as_posix()}:{size}".encode())
            with f.open("rb") as fh:
                h.update(fh.read(1 << 16))
                if size > 1 << 17:
                    fh.seek(-(1 << 16), os.SEEK_END)
                    h.update(fh.read())
    return "sha256:" + h.hexdigest()[:16]


class Embedder:
    """A sentence-transformers model with the right prefixes, normalised outputs."""

    def __init__(self, name: str = DEFAULT_EMBEDDER, *, revision: str | None = None,
                 query_prefix: str | None = None, passage_prefix: str | None = None,
                 device: str | None = None, batch_size: int = 32,
                 trust_remote_code: bool = False, dtype: str = "auto"):
        from .hub import offline_source

        local = Path(name)
        # A local directory is recorded by absolute path so the index works from anywhere.
        self.name = str(local.resolve()) if local.is_dir() else name
        self.batch_size = batch_size
        # A Hub that cannot be reached: the cache alone, or one line that says what to do.
        source = offline_source(self.name, "embedder", revision) or self.name

        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()   # "Loading weights" bars on every search
        try:
            self.model = SentenceTransformer(
                source, revision=revision if source == self.name else None, device=device,
                trust_remote_code=trust_remote_code)
        except OSError as e:
            raise EmbedderError(
                f"cannot load embedder {name!r}: {e}\n"
                "Give a local path with --embedder, or fetch the model on a machine with "
                "internet first (it is then read from the Hugging Face cache offline)."
            ) from None
        except (ValueError, RuntimeError, AssertionError, KeyError) as e:
            raise EmbedderError(f"cannot load embedder {name!r} on device {device or 'auto'}: "
                                f"{e}") from None
        _refuse_a_language_model(self.model, name)
        use_shape_agnostic_attention(str(self.model.device))   # every batch has a new width
        # The model's own declared prompts first, then the known families by name.
        prompts = getattr(self.model, "prompts", None) or {}
        declared = ((prompts["query"], prompts.get("document", prompts.get("passage", "")))
                    if "query" in prompts else None) or known_prefixes(name)
        q, p = declared or ("", "")
        self.query_prefix = q if query_prefix is None else query_prefix
        self.passage_prefix = p if passage_prefix is None else passage_prefix
        self.revision = resolve_revision(self.name, revision)
        self.tokenizer = self.model.tokenizer
        self.max_tokens = int(self.model.max_seq_length or 512)
        self.dimension = int(self.model.get_embedding_dimension())
        self.dtype = passage_dtype(dtype, str(self.model.device))

    @property
    def info(self) -> EmbedderInfo:
        return EmbedderInfo(self.name, self.revision, self.dimension, self.query_prefix,
                            self.passage_prefix, self.max_tokens, self.dtype)

    def count_tokens(self, text: str) -> int:
        """Tokens the model sees for a passage, prefix and special tokens included."""
        return len(self.tokenizer(self.passage_prefix + text, add_special_tokens=True,
                                  truncation=False, verbose=False)["input_ids"])

    def embed_passages(self, texts: list[str], progress: bool = False) -> np.ndarray:
        if self.dtype == "bfloat16":
            import torch
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self._encode([self.passage_prefix + t for t in texts], progress)
        return self._encode([self.passage_prefix + t for t in texts], progress)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode([self.query_prefix + t for t in texts], False)

    def _encode(self, texts: list[str], progress: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vecs = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=progress)
        return np.ascontiguousarray(vecs, dtype=np.float32)


def passage_dtype(choice: str, device: str) -> str:
    """What passages are embedded in. "auto" (or RAG_EMBED_DTYPE): bfloat16 autocast on a
    CPU with AMX-bf16 tiles (oneDNN runs bf16 matmuls on them: 2.3x the passages/s of
    float32 for multilingual-e5-small, vectors within cosine 0.99999), else float32.
    Questions are always embedded in float32."""
    choice = os.environ.get("RAG_EMBED_DTYPE", "auto") if choice == "auto" else choice
    if choice in ("float32", "fp32"):
        return "float32"
    if choice in ("bfloat16", "bf16"):
        return "bfloat16" if device == "cpu" else "float32"
    if choice != "auto":
        raise EmbedderError(f"embedding dtype must be auto, float32 or bfloat16, not {choice!r}")
    if device != "cpu":
        return "float32"
    try:
        import torch
        return "bfloat16" if torch.cpu._is_amx_tile_supported() else "float32"
    except (AttributeError, RuntimeError):
        return "float32"


def resolve_revision(name: str, revision: str | None = None) -> str:
    """What identifies the weights, without loading them: a fingerprint of a local
    directory, else the commit of the cached Hub snapshot, else "unknown"."""
    if Path(name).is_dir():
        return _fingerprint(Path(name))
    try:
        from huggingface_hub import snapshot_download
        path = Path(snapshot_download(name, revision=revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (or not a Hub id): nothing to compare
        return revision or "unknown"
    return path.resolve().name if path.parent.name == "snapshots" else _fingerprint(path)


class LazyEmbedder:
    """Loads the model only when a document actually needs splitting or embedding."""

    def __init__(self, settings, name: str, prefixes: tuple, log):
        """`settings`: device, batch_size, trust_remote_code (ingest's IngestSettings)."""
        self.settings, self.name, self.prefixes, self.log = settings, name, prefixes, log
        self._model: Embedder | None = None

    def get(self) -> Embedder:
        if self._model is None:
            s = self.settings
            self.log(f"loading embedder {self.name}")
            self._model = Embedder(self.name, query_prefix=self.prefixes[0],
                                   passage_prefix=self.prefixes[1], device=s.device,
                                   batch_size=s.batch_size,
                                   trust_remote_code=s.trust_remote_code,
                                   dtype=getattr(s, "embed_dtype", "auto"))
        return self._model


def _refuse_a_language_model(model, name: str) -> None:
    """A causal LM given as the embedder loads (mean pooling over any transformer) and
    gives useless vectors: refuse it by what its config says it is."""
    first = model[0] if len(model) else None
    config = getattr(getattr(first, "auto_model", None), "config", None)
    archs = getattr(config, "architectures", None) or []
    if getattr(config, "is_decoder", False) or any(
            a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        raise EmbedderError(f"{name!r} is a language model ({', '.join(archs) or 'a decoder'}), "
                            "not a sentence encoder; give a sentence-transformers model such as "
                            f"{DEFAULT_EMBEDDER} (the generator is set with --model)")
