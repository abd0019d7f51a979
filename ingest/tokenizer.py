"""Japanese tokens for BM25: SudachiPy, NFKC, content words only.

Regex tokenizers turn a run of kanji and kana into one token (zero recall for
Japanese); morphological analysis gives words. Each long unit (mode C, e.g.
履修登録) is indexed together with its short parts (mode A: 履修, 登録), so a
question matches whichever granularity it uses. Sudachi's normalized form also
folds spelling variants (附属/付属, 一/1).
"""
from __future__ import annotations

from functools import cached_property
from importlib import metadata

from .japanese import nfkc

# Part-of-speech classes that carry no topic: particles, auxiliaries, symbols.
_DROP_POS = {"助詞", "助動詞", "補助記号", "記号", "空白"}
# Light verbs and formal nouns that occur in almost every article.
_STOP_WORDS = {"為る", "有る", "成る", "居る", "こと", "もの", "ため", "よう", "等", "場合"}


class JapaneseTokenizer:
    name = "sudachipy"

    def __init__(self, dictionary: str = "core"):
        self.dictionary = dictionary

    @cached_property
    def _tokenizer(self):
        from sudachipy import Dictionary, SplitMode
        self._modes = SplitMode
        return Dictionary(dict=self.dictionary).tokenizer(mode=SplitMode.C)

    @property
    def info(self) -> dict:
        return {"name": self.name, "version": metadata.version("sudachipy"),
                "dictionary": f"sudachidict_{self.dictionary}",
                "dictionary_version": metadata.version(f"sudachidict_{self.dictionary}"),
                "modes": "C+A", "normalization": "NFKC+normalized_form"}

    def tokenize(self, text: str) -> list[str]:
        tok = self._tokenizer
        out: list[str] = []
        for line in nfkc(text).splitlines():
            if not line.strip():
                continue
            # Sudachi refuses inputs over ~49k bytes; regulation lines are far shorter.
            for start in range(0, len(line), 4000):
                out.extend(self._words(tok, line[start:start + 4000]))
        return out

    def _words(self, tok, line: str) -> list[str]:
        out: list[str] = []
        for m in tok.tokenize(line):
            if m.part_of_speech()[0] in _DROP_POS:
                continue
            word = m.normalized_form()
            if word not in _STOP_WORDS:
                out.append(word)
            parts = m.split(self._modes.A)
            if len(parts) > 1:
                out.extend(w for p in parts
                           if p.part_of_speech()[0] not in _DROP_POS
                           and (w := p.normalized_form()) not in _STOP_WORDS)
        return out
