"""Character-bigram BM25: the second sparse channel beside Sudachi's words.

Statute text defeats a morphological tokenizer in two ways: long compounds
(届出書提出外国会社) come out as one unit or as parts that do not match the question's
split, and the numbers of labels (第5条, 第二十四条) are no words at all. Overlapping
character bigrams match any shared substring of two characters, whatever the
segmentation; on the statute set a bigram BM25 over whole articles beat the word BM25
by 0.14 article recall@10 (issue 19). Bigrams never cross whitespace or punctuation;
a run of one character is kept as a unigram. Text is NFKC-normalised first (full-width
digits and letters fold).

The index lives in the generation directory as `bm25_bigram/` (a bm25s index) with
`bigram.json` recording BIGRAM_VERSION; an index without it (written before the channel
existed, or with another version) gets one built from its passages when it is loaded,
in memory, so old indexes keep working and gain the channel.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from .japanese import nfkc

BIGRAM_VERSION = 1
DIRNAME = "bm25_bigram"
_INFO = "bigram.json"
# Runs of characters between whitespace and punctuation (Japanese and ASCII).
_SPLIT = re.compile(r"[\s、。，．・「」『』（）()［］\[\]【】〔〕｛｝{}〈〉《》:：;；!！?？,.\"'“”‘’…―─-]+")


def bigrams(text: str) -> list[str]:
    """Overlapping character bigrams of `text` (NFKC), per run between punctuation."""
    out: list[str] = []
    for run in _SPLIT.split(nfkc(text)):
        if len(run) == 1:
            out.append(run)
        else:
            out.extend(run[i:i + 2] for i in range(len(run) - 1))
    return out


def build(texts: list[str]):
    """A bm25s index over the bigrams of `texts` (one document each, ids aligned)."""
    import bm25s

    retriever = bm25s.BM25()
    retriever.index([bigrams(t) or [""] for t in texts], show_progress=False)
    return retriever


def save(bm25, gen: Path) -> None:
    bm25.save(str(gen / DIRNAME), show_progress=False)
    (gen / DIRNAME / _INFO).write_text(json.dumps({"version": BIGRAM_VERSION}) + "\n",
                                       encoding="utf-8")


def load(gen: Path):
    """The stored bigram index of a generation, or None when it has none of this version."""
    import bm25s

    info = gen / DIRNAME / _INFO
    try:
        if json.loads(info.read_text(encoding="utf-8")).get("version") != BIGRAM_VERSION:
            return None
    except (OSError, ValueError, AttributeError):
        return None
    return bm25s.BM25.load(str(gen / DIRNAME), show_progress=False)


def search(bm25, query: str, depth: int) -> list[tuple[int, float]]:
    """(document index, score) of the best `depth` documents sharing a bigram with `query`."""
    import numpy as np

    vocab = bm25.vocab_dict
    ids = list(dict.fromkeys(vocab[t] for t in bigrams(query) if t in vocab))
    if not ids:
        return []
    scores = bm25.get_scores_from_ids(ids)
    depth = min(depth, len(scores))
    top = np.argpartition(-scores, depth - 1)[:depth]
    top = top[np.argsort(-scores[top], kind="stable")]
    return [(int(i), float(scores[i])) for i in top if scores[i] > 0]
