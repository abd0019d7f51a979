"""Search an index: dense (FAISS), BM25 (bm25s + Sudachi) or both fused by rank."""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ingest import store
from ingest.embedder import Embedder
from ingest.errors import RagError
from ingest.japanese import nfkc
from ingest.passage import Passage
from ingest.tokenizer import JapaneseTokenizer

from ..config import BIGRAM_WEIGHT, BM25_WEIGHT, MODES
from . import article_fusion, citation_channel
from .editions import EditionChoice, Governing, annotate, edition_json, load_table
from .thesaurus import DEFAULT as DEFAULT_THESAURUS
from .thesaurus import Thesaurus

# The vote of the articles a question cites by number (rag/retrieval/citation_channel.py) in
# hybrid fusion, the dense ranking's being 1. The public regulation sets cite no article
# numbers, so they cannot choose it: it is the dense ranking's vote, not tuned.
CITATION_WEIGHT = 1.0
RRF_K = 60          # the constant of reciprocal rank fusion (Cormack et al., 2009)
# A regulation's 趣旨/目的 article states what the regulation covers, so it shares words
# with every question about that regulation and answers almost none of them. It goes
# this many places down in each ranking (it still comes up when nothing else matches).
# Measured on the public set: hybrid hit@1 +0.05, no change on the sample sets.
SCOPE_DEMOTION = 3
_SCOPE_CAPTION = re.compile(r"^(?:趣旨|目的|総則|通則|適用範囲)$")
_SCOPE_TEXT = re.compile(r"(?:この|本)\S{0,8}(?:学則|規則|規程|細則|要項|要綱|内規|基準|申合せ)は")


def is_scope_article(p: Passage) -> bool:
    """「（趣旨）第1条 この規程は、…必要な事項を定める。」"""
    return bool(_SCOPE_CAPTION.match(p.caption)) or (
        p.article == "第1条" and not p.caption and _SCOPE_TEXT.search(nfkc(p.text)[:80]) is not None)


def demote_scope(ranking: list[tuple[int, float]], passages: list[Passage],
                 places: int = SCOPE_DEMOTION) -> list[tuple[int, float]]:
    """Move 趣旨/目的 articles `places` positions down (scores kept as they were)."""
    keyed = [((pos + places + 0.5) if is_scope_article(passages[i]) else pos, (i, score))
             for pos, (i, score) in enumerate(ranking)]
    return [item for _, item in sorted(keyed, key=lambda x: x[0])]


class EmbedderMismatch(RagError):
    pass


@dataclass
class Hit:
    rank: int
    score: float                       # the mode's score (RRF for hybrid)
    passage: Passage
    dense_score: float | None = None   # cosine similarity, when dense search ran

    def to_json(self) -> dict:
        p = self.passage
        return {"rank": self.rank, "score": round(float(self.score), 6), **p.citation(),
                "heading": p.heading, "text": p.text, "id": p.id, "edition": edition_json(p)}


class Retriever:
    """Loads an index once and answers many queries."""

    def __init__(self, index_dir: str | Path, *, embedder: str | None = None,
                 device: str | None = None, trust_remote_code: bool = False,
                 thesaurus: str | Path | None = DEFAULT_THESAURUS,
                 bm25_weight: float = BM25_WEIGHT, bigram_weight: float = BIGRAM_WEIGHT,
                 query_encoder: str = "auto"):
        """`query_encoder`: auto or numpy (the numpy encoder when it reproduces the
        index's embedder, else sentence-transformers), or sentence-transformers."""
        self.index_dir = Path(index_dir)
        self.query_encoder_setting = query_encoder
        self.bm25_weight = bm25_weight
        self.bigram_weight = bigram_weight      # the character-bigram BM25's vote (hybrid)
        self.citation_weight = CITATION_WEIGHT  # articles the question cites by number
        self.thesaurus = Thesaurus.load(thesaurus)
        self.index = store.load_index(self.index_dir)
        self.editions  # noqa: B018 - gives every passage its edition
        self.info = self.index.manifest.embedder
        if embedder and Path(embedder).is_dir():
            embedder = str(Path(embedder).resolve())
        if embedder and embedder != self.info.name:
            raise EmbedderMismatch(
                f"index {self.index_dir} was built with embedder {self.info.name!r}, "
                f"not {embedder!r}: search it without --embedder/RAG_EMBEDDER, or rebuild "
                f"it with `rag ingest --embedder {embedder}`")
        self._embedder_args = dict(device=device, trust_remote_code=trust_remote_code)
        self._embedder: Embedder | None = None
        self._query_encoder = None
        self.query_encoder_kind: str | None = None     # "numpy" or "sentence-transformers"
        self.tokenizer = JapaneseTokenizer()

    @property
    def passages(self) -> list[Passage]:
        return self.index.passages

    @property
    def embedder(self) -> Embedder:
        """The index's sentence-transformers model (torch, transformers: seconds to import)."""
        if self._embedder is None:
            info = self.info
            model = Embedder(info.name, query_prefix=info.query_prefix,
                             passage_prefix=info.passage_prefix, **self._embedder_args)
            self._check_embedder(model.revision, model.dimension)
            self._embedder = model
        return self._embedder

    @property
    def query_encoder(self):
        """What embeds questions: rag.retrieval.query_encoder's numpy encoder when the index's
        embedder is a model it runs exactly (no torch import: a cold `rag search` answers
        in about a second), else the sentence-transformers model."""
        if self._query_encoder is None:
            from ingest.embedder import resolve_revision
            from .query_encoder import NumpyQueryEncoder

            encoder = None if self.query_encoder_setting == "sentence-transformers" else (
                NumpyQueryEncoder.load(self.info.name, **self._embedder_args))
            if encoder is not None:
                self._check_embedder(resolve_revision(self.info.name), encoder.dimension)
                if not self._reproduces_the_index(encoder):
                    encoder = None
            if encoder is not None:
                prefix = self.info.query_prefix
                self._query_encoder = lambda texts: encoder.encode([prefix + t for t in texts])
                self.query_encoder_kind = "numpy"
            else:
                self._query_encoder = self.embedder.embed_queries
                self.query_encoder_kind = "sentence-transformers"
        return self._query_encoder

    def _reproduces_the_index(self, encoder) -> bool:
        """Whether `encoder` gives the vector sentence-transformers stored for the index's
        shortest passage: the tokenizer and the forward pass checked on real text."""
        if not self.passages:
            return True
        i = min(range(len(self.passages)), key=lambda j: len(self.passages[j].search_text()))
        text = self.info.passage_prefix + self.passages[i].search_text()
        try:
            stored = self.index.dense.reconstruct(i)
        except RuntimeError:             # a FAISS index that cannot give vectors back
            return False
        # Passages embedded under bfloat16 autocast differ from float32 by ~1e-3.
        tolerance = 5e-3 if getattr(self.info, "dtype", "float32") == "bfloat16" else 1e-4
        return encoder.matches(text, stored, tolerance)

    def _check_embedder(self, revision: str, dimension: int) -> None:
        info = self.info
        if dimension != info.dimension or revision != info.revision:
            raise EmbedderMismatch(
                f"embedder {info.name!r} is not the model index {self.index_dir} was "
                f"built with (revision {revision} vs {info.revision}, dimension "
                f"{dimension} vs {info.dimension}); re-run `rag ingest`")

    def warm(self, mode: str = "hybrid") -> None:
        """Load what `mode` needs now, so the first query's latency is only the search."""
        if mode in ("dense", "hybrid"):
            self.query_encoder  # noqa: B018 - loads the model
        self.tokenizer.tokenize("規程")

    def search(self, query: str, k: int = 5, mode: str = "hybrid", *,
               editions: EditionChoice | None = None) -> list[Hit]:
        return self.search_many([query], k, mode, editions=editions)[0]

    def search_many(self, queries: list[str], k: int = 5, mode: str = "hybrid", *,
                    editions=None) -> list[list[Hit]]:
        """`editions`: an EditionChoice, or one per query (None: as of today; see
        rag.retrieval.editions): only the governing edition of a regulation is searched."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        n = len(self.passages)
        if n == 0 or not queries:
            return [[] for _ in queries]
        # Deep enough that k distinct articles remain once their passages are fused.
        depth = min(n, max(100, 10 * k))
        allowed = self._edition_filters(editions, len(queries))
        # Leave-outs must not use up the depth: search deeper by as many as are left out.
        depth = min(n, depth + max((n - len(a) for a in allowed if a is not None), default=0))
        queries = [nfkc(q).strip() for q in queries]
        if self.thesaurus:
            queries = [self.thesaurus.expand(q) for q in queries]
        dense, qvecs = self._dense(queries, depth) if mode in ("dense", "hybrid") else (None, None)
        sparse = [self._bm25(q, depth) for q in queries] if mode in ("bm25", "hybrid") else None
        bigram = ([self._bigram(q, depth) for q in queries]
                  if mode == "hybrid" and self.bigram_weight else None)
        dense = _keep(dense, allowed) if dense else dense
        sparse = _keep(sparse, allowed) if sparse else sparse
        bigram = _keep(bigram, allowed) if bigram else bigram
        demoted_dense = [demote_scope(r, self.passages) for r in dense] if dense else None
        demoted_sparse = [demote_scope(r, self.passages) for r in sparse] if sparse else None
        demoted_bigram = [demote_scope(r, self.passages) for r in bigram] if bigram else None
        out = []
        for qi in range(len(queries)):
            # One result per article, with its best passage (rag/retrieval/article_fusion.py).
            if mode == "dense":
                ranked = article_fusion.first_per_article(demoted_dense[qi], self.passages)
            elif mode == "bm25":
                ranked = article_fusion.first_per_article(demoted_sparse[qi], self.passages)
            else:
                channels = [demoted_dense[qi], demoted_sparse[qi]]
                weights = [1.0, self.bm25_weight]
                if demoted_bigram:
                    channels.append(demoted_bigram[qi])
                    weights.append(self.bigram_weight)
                if self.citation_weight:
                    channels.append(_keep([self._cited(queries[qi])], [allowed[qi]])[0])
                    weights.append(self.citation_weight)
                ranked = article_fusion.fuse_articles(channels, weights, self.passages)
            cos = dict(dense[qi]) if dense else {}
            top = ranked[:k]
            if dense:     # a hit found by BM25 alone still gets its similarity (abstention)
                missing = [i for i, _ in top if i not in cos]
                if missing:
                    vecs = np.stack([self.index.dense.reconstruct(i) for i in missing])
                    cos.update(zip(missing, (vecs @ qvecs[qi]).tolist()))
            out.append([Hit(r + 1, s, self.passages[i], cos.get(i))
                        for r, (i, s) in enumerate(top)])
        return out

    # ------------------------------------------------------------ editions

    @cached_property
    def editions(self):
        """The index's EditionTable; loading it gives every passage its `edition`."""
        table = load_table(self.index)
        annotate(table, self.passages)
        return table

    def governing(self, choice: EditionChoice | None = None) -> Governing:
        key = (choice or EditionChoice()).resolved()
        cache = self.__dict__.setdefault("_governing", {})
        if key not in cache:
            if len(cache) > 64:
                cache.clear()
            cache[key] = Governing(self.editions, key)
        return cache[key]

    def _edition_filters(self, editions, count: int) -> list[set[int] | None]:
        """Per query, the passage indices its edition choice allows (None: all)."""
        choices = editions if isinstance(editions, list) else [editions] * count
        masks: dict[EditionChoice, set[int] | None] = {}
        out = []
        for c in choices:
            key = (c or EditionChoice()).resolved()
            if key not in masks:
                gov = self.governing(key)
                masks[key] = None if not gov.rules else {
                    i for i, p in enumerate(self.passages) if gov.allows(p)}
            out.append(masks[key])
        return out

    # ------------------------------------------------------------ the corpus, for context

    def article(self, source: str, article: str) -> list[Passage]:
        """All passages (項-split parts in order) of one article of one document."""
        return self._corpus[0].get((source, article), [])

    def adjacent_article(self, source: str, article: str, offset: int) -> str | None:
        """The article before (-1) or after (+1) in document order: 前条 of 第16条 is
        第15条の2 when that exists."""
        order = self._corpus[1].get(source, [])
        if article not in order:
            return None
        i = order.index(article) + offset
        return order[i] if 0 <= i < len(order) else None

    def resolve_document(self, name: str, current: str) -> str | None:
        """The document a regulation name (学則, 履修規程) refers to: the current one if
        its title ends with the name, else the one document whose title does."""
        titles = self._corpus[2]
        if titles.get(current, "").endswith(name):
            return current
        matches = [s for s, t in titles.items() if t.endswith(name)]
        return matches[0] if len(matches) == 1 else None

    def titles(self) -> dict[str, str]:
        """Document title by source."""
        return self._corpus[2]

    @cached_property
    def _corpus(self):
        """(passages by (source, article), article order per source, title per source)."""
        articles: dict[tuple[str, str], list[Passage]] = {}
        order: dict[str, list[str]] = {}
        titles: dict[str, str] = {}
        for p in self.passages:
            articles.setdefault((p.source, p.article), []).append(p)
            titles.setdefault(p.source, p.title)
            if "条" in p.article and p.article not in order.setdefault(p.source, []):
                order[p.source].append(p.article)
        return articles, order, titles

    def _dense(self, queries: list[str], depth: int):
        """Ranked (passage index, cosine) per query, and the query vectors."""
        vecs = self.query_encoder(queries)
        scores, ids = self.index.dense.search(vecs, depth)
        return [[(int(i), float(s)) for i, s in zip(row_i, row_s) if i >= 0]
                for row_i, row_s in zip(ids, scores)], vecs

    def _cited(self, query: str) -> list[tuple[int, float]]:
        """The passages of the articles `query` cites by number (rag/retrieval/citation_channel.py)."""
        return citation_channel.citation_ranking(query, self.titles(), self._passage_ids,
                                                 self.passages)

    @cached_property
    def _passage_ids(self) -> dict[tuple[str, str], list[int]]:
        out: dict[tuple[str, str], list[int]] = {}
        for i, p in enumerate(self.passages):
            if p.article:
                out.setdefault((p.source, p.article), []).append(i)
        return out

    @cached_property
    def bigram_bm25(self):
        """The character-bigram BM25 of the index; built here, in memory, for an index
        written before ingest stored one (ingest/bigram.py)."""
        from ingest import bigram
        if self.index.bm25_bigram is None:
            self.index.bm25_bigram = bigram.build([p.search_text() for p in self.passages])
        return self.index.bm25_bigram

    def _bigram(self, query: str, depth: int) -> list[tuple[int, float]]:
        from ingest import bigram
        return bigram.search(self.bigram_bm25, query, depth)

    def _bm25(self, query: str, depth: int) -> list[tuple[int, float]]:
        bm25 = self.index.bm25
        ids = [bm25.vocab_dict[t] for t in self.tokenizer.tokenize(query) if t in bm25.vocab_dict]
        if not ids:
            return []
        scores = bm25.get_scores_from_ids(ids)
        top = np.argpartition(-scores, min(depth, len(scores) - 1))[:depth]
        top = top[np.argsort(-scores[top], kind="stable")]
        # Passages that share no word with the question are not BM25 results at all.
        return [(int(i), float(scores[i])) for i in top if scores[i] > 0]


def _keep(rankings, allowed):
    """Each query's ranking without the passages its edition choice leaves out."""
    return [r if a is None else [x for x in r if x[0] in a] for r, a in zip(rankings, allowed)]


def reciprocal_rank_fusion(rankings: list[list[tuple[int, float]]], k: int = RRF_K,
                           weights: list[float] | None = None) -> list[tuple[int, float]]:
    """Fuse ranked lists of (passage index, score) by the sum of weight / (k + rank)."""
    fused: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights or [1.0] * len(rankings)):
        for rank, (i, _) in enumerate(ranking, start=1):
            fused[i] = fused.get(i, 0.0) + weight / (k + rank)
    return sorted(fused.items(), key=lambda x: (-x[1], x[0]))
