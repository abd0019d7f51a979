import os
import shutil
from pathlib import Path

import pytest

from tiny_models import build_tiny_sentence_transformer

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "corpus"

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ["HF_HUB_OFFLINE"] = "1"          # tests never download


def corpus_texts() -> list[str]:
    from ingest.loaders import load_document
    texts = []
    for f in sorted(CORPUS.iterdir()):
        if f.suffix in {".txt", ".md", ".html", ".pdf"}:
            texts.append(load_document(f).text)
    return texts


@pytest.fixture(scope="session")
def tiny_embedder(tmp_path_factory) -> Path:
    """A tiny random sentence-transformers model whose tokenizer knows the corpus."""
    out = tmp_path_factory.mktemp("tiny-st")
    return build_tiny_sentence_transformer(out, corpus_texts(),
                                           prompts={"query": "query: ", "document": "passage: "})


@pytest.fixture(scope="session")
def other_embedder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("other-st")
    return build_tiny_sentence_transformer(out, corpus_texts(), dim=24, seed=1)


@pytest.fixture(scope="session")
def corpus_index(tmp_path_factory, tiny_embedder) -> Path:
    """The sample corpus ingested once with the tiny embedder (read-only for tests)."""
    from ingest.pipeline import IngestSettings, ingest
    index = tmp_path_factory.mktemp("index") / "idx"
    ingest([CORPUS], index, IngestSettings(embedder=str(tiny_embedder)))
    return index


@pytest.fixture
def corpus_copy(tmp_path) -> Path:
    dst = tmp_path / "corpus"
    shutil.copytree(CORPUS, dst)
    return dst


@pytest.fixture(scope="session")
def e5_small() -> Path:
    path = os.environ.get("E5_SMALL_DIR")
    if not path or not (Path(path) / "modules.json").is_file():
        pytest.skip("E5_SMALL_DIR is not set to a multilingual-e5-small build "
                    "(make one with ../shared/tools/make-e5-small)")
    return Path(path)


@pytest.fixture(scope="session")
def tiny_generator(tmp_path_factory) -> Path:
    """A tiny random GPT-NeoX with OpenCALM's layout and a BPE tokenizer of the corpus."""
    from tiny_models import build_tiny_gpt_neox
    return build_tiny_gpt_neox(tmp_path_factory.mktemp("tiny-neox"), corpus_texts())


@pytest.fixture(scope="session")
def tiny_adapter(tmp_path_factory, tiny_generator) -> Path:
    from tiny_models import make_lora_adapter
    return make_lora_adapter(tiny_generator, tmp_path_factory.mktemp("tiny-lora"))
