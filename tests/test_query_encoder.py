"""The numpy question encoder against sentence-transformers, and what a cold search imports."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rag.retrieval.query_encoder import NumpyQueryEncoder

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = ["query: 半年で15単位しか取れませんでした。除籍されますか？", "query: 学費を払えない",
             "第42条 学長は、次の各号のいずれかに該当する者を除籍する。", "ABC def " * 5, "休学"]


def _same_as_sentence_transformers(path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    encoder = NumpyQueryEncoder.load(str(path))
    assert encoder is not None, "the model's pipeline should be one the numpy encoder runs"
    ours = encoder.encode(QUESTIONS)
    st = SentenceTransformer(str(path), device="cpu")
    theirs = st.encode(QUESTIONS, normalize_embeddings=True, convert_to_numpy=True)
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 1e-5
    for q in QUESTIONS:      # the tokenizer.json alone tokenises as transformers does
        assert encoder.tokenizer.encode(q.lower() if encoder.lower else q).ids == \
            st.tokenizer(q)["input_ids"]


def test_tiny_bert_matches_sentence_transformers(tiny_embedder):
    _same_as_sentence_transformers(tiny_embedder)


def test_tiny_modernbert_matches_sentence_transformers(tmp_path):
    """ruri-v3's architecture; the window (8) is shorter than the texts, so the sliding
    attention of the local layers is exercised."""
    from conftest import corpus_texts
    from tiny_models import build_tiny_modernbert_sentence_transformer

    path = build_tiny_modernbert_sentence_transformer(tmp_path / "mb", corpus_texts())
    _same_as_sentence_transformers(path)
    encoder = NumpyQueryEncoder.load(str(path))
    windowed = encoder.encode(QUESTIONS[2:3])
    encoder.half_window = 10 ** 6
    # 10x the tolerance of the match with sentence-transformers: the window mattered
    assert np.abs(encoder.encode(QUESTIONS[2:3]) - windowed).max() > 1e-4


def test_e5_small_matches_sentence_transformers(e5_small):
    _same_as_sentence_transformers(e5_small)


def test_unsupported_pipelines_fall_back(tiny_embedder, tmp_path, monkeypatch):
    import shutil

    assert NumpyQueryEncoder.load(str(tiny_embedder), device="cuda") is None
    assert NumpyQueryEncoder.load(str(tiny_embedder), trust_remote_code=True) is None
    assert NumpyQueryEncoder.load(str(tmp_path / "nothing-here")) is None
    dense = tmp_path / "with-dense"
    shutil.copytree(tiny_embedder, dense)
    modules = json.loads((dense / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "name": "2", "path": "2_Dense",
                       "type": "sentence_transformers.models.Dense"})
    (dense / "modules.json").write_text(json.dumps(modules))
    assert NumpyQueryEncoder.load(str(dense)) is None
    modern = tmp_path / "modern"
    shutil.copytree(tiny_embedder, modern)
    config = json.loads((modern / "config.json").read_text())
    (modern / "config.json").write_text(json.dumps({**config, "model_type": "modernbert"}))
    assert NumpyQueryEncoder.load(str(modern)) is None


def test_an_encoder_that_does_not_reproduce_the_index_is_not_used(corpus_index,
                                                                   monkeypatch):
    from rag.retrieval.retriever import Retriever

    assert Retriever(corpus_index)._reproduces_the_index(
        NumpyQueryEncoder.load(Retriever(corpus_index).info.name))
    real = NumpyQueryEncoder.encode
    monkeypatch.setattr(NumpyQueryEncoder, "encode", lambda self, texts: real(self, texts) * 0.9)
    retriever = Retriever(corpus_index)
    retriever.warm("dense")
    assert retriever.query_encoder_kind == "sentence-transformers"


def test_search_ranks_the_same_with_either_encoder(corpus_index, monkeypatch):
    from rag.retrieval.retriever import Retriever

    questions = ["除籍になるのはどんな場合？", "休学の期間は？", "授業料を納めないとどうなる"]
    fast = Retriever(corpus_index)
    fast.warm("dense")
    assert fast.query_encoder_kind == "numpy"
    slow = Retriever(corpus_index, query_encoder="sentence-transformers")
    slow.warm("dense")
    assert slow.query_encoder_kind == "sentence-transformers"
    for mode in ("dense", "hybrid"):
        a = fast.search_many(questions, k=8, mode=mode)
        b = slow.search_many(questions, k=8, mode=mode)
        assert [[h.passage.id for h in hits] for hits in a] == \
            [[h.passage.id for h in hits] for hits in b]
        for x, y in zip(a, b):
            assert [h.dense_score for h in x] == pytest.approx([h.dense_score for h in y],
                                                              abs=1e-5)


def test_cold_search_imports_neither_torch_nor_sentence_transformers(corpus_index):
    code = ("import sys\nfrom rag.cli import cli\n"
            "try:\n    cli(['search', '除籍', '--index', sys.argv[1], '--json'], obj={})\n"
            "except SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'sentence_transformers',"
            " 'sklearn') if m in sys.modules))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAG_QUERY_ENCODER", None)
    out = subprocess.run([sys.executable, "-c", code, str(corpus_index)], capture_output=True,
                         text=True, env=env, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "HEAVY []"
    assert json.loads(out.stdout[:out.stdout.rindex("HEAVY")])[0]["rank"] == 1


def test_help_imports_nothing_heavy():
    code = ("import sys\nfrom rag.cli import cli\n"
            "try:\n    cli(['--help'], obj={})\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'numpy', 'faiss')"
            " if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "HEAVY []", out.stderr


def test_an_hnsw_index_uses_the_numpy_encoder_too(tiny_embedder, tmp_path):
    from conftest import CORPUS
    from ingest.pipeline import IngestSettings, ingest
    from rag.retrieval.retriever import Retriever

    index = tmp_path / "hnsw"
    ingest([CORPUS / "学則.txt"], index, IngestSettings(embedder=str(tiny_embedder),
                                                        dense="hnsw"))
    retriever = Retriever(index)
    retriever.warm("dense")
    assert retriever.query_encoder_kind == "numpy"
    assert retriever.search("除籍", k=3, mode="dense")


def test_concurrent_questions_get_their_own_vectors(tiny_embedder):
    from concurrent.futures import ThreadPoolExecutor

    encoder = NumpyQueryEncoder.load(str(tiny_embedder))
    expected = np.stack([encoder.encode([q])[0] for q in QUESTIONS])
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda i: encoder.encode([QUESTIONS[i % 5]])[0], range(40)))
    assert all(np.array_equal(v, expected[i % 5]) for i, v in enumerate(got))


def test_a_batch_is_encoded_in_one_pass_with_the_same_vectors(tiny_embedder):
    """`rag search --queries`: the questions' tokens packed into one matrix
    (rag/retrieval/query_batch.py) give the vectors of one question at a time (float rounding
    aside), for questions of different lengths."""
    encoder = NumpyQueryEncoder.load(str(tiny_embedder))
    questions = QUESTIONS + ["除籍", "休学の期間は通算して何年まで認められますか。" * 3]
    one = np.stack([encoder.encode([q])[0] for q in questions])
    batch = encoder.encode(questions)
    assert batch.shape == one.shape
    assert np.allclose(batch, one, atol=1e-5), np.abs(batch - one).max()
