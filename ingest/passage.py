"""The passage: the one schema every part of the project reads and writes."""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, fields

from .japanese import nfkc


@dataclass
class Passage:
    id: str             # stable: source + article (+ part) + content hash
    source: str         # path relative to the ingested directory, POSIX separators
    title: str          # document title (学則, 履修規程, ...)
    heading: str        # 章/節 path, e.g. "第5章 休学、退学及び除籍"
    article: str        # 第42条 | 第15条の2 | 附則第1条 | 附則 | 第3項 (申合せ item) | ""
    caption: str        # the article's caption without brackets, e.g. 除籍
    paragraph: str      # 項 range when a long article was split ("第2項", "第2項〜第3項"), else ""
    page: int | None    # 1-based page for PDFs
    text: str           # the original text, for display and for the generator
    # Which provisions the article belongs to, where labels repeat: "" for the main
    # provisions, "附則" for the (first, unnamed) 附則, "附則(平成二七年法律第九号)" for the
    # 附則 of an amending law, "附則[3]" for the third 附則 when it is not named.
    # (article, scope) is unique in a document; the passage id carries both.
    scope: str = ""
    # The edition it belongs to (rag.retrieval.editions.annotate, when an index is
    # loaded): title, effective period, how many editions its regulation has. Never
    # stored in passages.jsonl: periods change when a newer edition is indexed.
    edition: dict | None = field(default=None, compare=False, repr=False)

    @property
    def label(self) -> str:
        """Human citation: 第42条（除籍）第2項."""
        cap = f"（{self.caption}）" if self.caption else ""
        return f"{self.article}{cap}{self.paragraph}"

    @property
    def key(self) -> str:
        """Article-level key used in ids and change reports (第42条, 第42条第2項,
        附則(平成二七年法律第九号)第2条): the article within its scope."""
        article = self.article
        if self.scope and self.scope != "附則":
            rest = article[2:] if article.startswith("附則") else article
            article = self.scope + ("" if rest.startswith(("第", "別", "様")) or not rest
                                    else " ") + rest
        return article + self.paragraph

    def header(self) -> str:
        """Document title and heading path: what the article text alone does not say."""
        parts = [self.title, self.heading, self.label]
        return " ".join(p for p in parts if p)

    def search_text(self) -> str:
        """What is embedded and BM25-indexed: header + text, NFKC-normalised.

        A passage that says 「第7条 …20単位とする」 must be findable by a question
        that names its regulation, so the title and headings travel with it.
        """
        return nfkc(self.header() + "\n" + self.text)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("edition", None)
        return d

    def citation(self) -> dict:
        """What a citation of this passage shows, in every JSON output (search, ask,
        eval): the document and its title, the article with caption, 項 and page."""
        return {"source": self.source, "title": self.title, "article": self.article,
                "caption": self.caption, "paragraph": self.paragraph, "page": self.page}

    @classmethod
    def from_dict(cls, d: dict) -> "Passage":
        names = {f.name for f in fields(cls)} - {"edition"}
        return cls(**{k: v for k, v in d.items() if k in names})


def content_hash(text: str, n: int = 10) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]
