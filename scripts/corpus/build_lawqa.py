#!/usr/bin/env python3
"""Build corpus/laws/lawqa/: the statutes lawqa_jp's questions rest on, as plain text in
e-Gov display style, and the questions as a retrieval set in the project's format.

    python scripts/corpus/build_lawqa.py \
        --lawqa /work/.mirror/digital-go-jp+lawqa_jp/repo \
        --japan-law /work/.mirror/DaisukeHori+japan-law/repo [--out corpus/laws/lawqa]

Both inputs are git directories (bare clones without a work tree); files are read with
`git show HEAD:path`. Nothing is fetched: the outputs are committed and tests read them.

Law text: DaisukeHori/japan-law's markdown (data/markdown/**/<law id>.md, CC0), the e-Gov
text without the numbers of 項 and 号, without captions and 章/節 headings, with one line
a sentence (本文 and ただし書 on two lines) and with a false article anchor wherever a
line begins with a cross-reference in bold (「**第七十五条の二**の二第一項…」). The XML
beside it in that repository is a Git LFS pointer, so the structure is reconstructed:

  * an anchor whose bold label is followed by more text on its line is no article: its
    line is body text of the article before (the label unbolded), except a bare branch
    number (「**第二十七条の二十二**の二」 is 第二十七条の二十二の二: the source cuts
    two-level labels so);
  * anchors out of order (cells of a 読み替え表) are body text: a longest increasing run of
    article numbers keeps the real ones;
  * the 本則 ends where the article numbering restarts (the first 附則 article); the 附則
    (hundreds of amending laws' transitional articles) is left out to keep the set small;
  * a line beginning ただし / この場合において / この場合には continues its 項;
  * after a line announcing a list (次に掲げる / 次の各号 / 次のいずれか / 左に掲げる),
    lines that do not end in 「。」 or end in こと。/とき。/もの。/者。 are 号 (一, 二, …;
    イロハ sub-items cannot be told from 号 and are numbered as 号 too);
  * every other line is a new 項 (２, ３, …).

Article boundaries and labels are the source's (exact); 項/号 numbers are reconstructed
(approximate). Questions: lawqa_jp data/selection.json (PDL 1.0), the question text as the
query, the correct choice as the answer, gold = the articles of the context that are in
one of the laws kept here. The query is the question followed by its four choices
(「次のうち、正しいものを教えてください。」 says nothing without them).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import unicodedata
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# law id -> (file name, the title lawqa_jp's contexts use). The three laws of the set and
# the 施行令 21 金商法 questions also rest on.
LAWS = {
    "323AC0000000025": ("金融商品取引法.txt", "金融商品取引法", "acts"),
    "335AC0000000145": ("医薬品医療機器等法.txt",
                        "医薬品、医療機器等の品質、有効性及び安全性の確保等に関する法律", "acts"),
    "403AC0000000090": ("借地借家法.txt", "借地借家法", "acts"),
    "340CO0000000321": ("金融商品取引法施行令.txt", "金融商品取引法施行令", "cabinet_orders"),
}

KANJI = "〇一二三四五六七八九"
_ANCHOR = re.compile(r'^<a id="(第[^"]+条[^"]*)"></a>$')
_BOLD = re.compile(r"^\*\*(第[一二三四五六七八九十百千〇]+条(?:の[一二三四五六七八九十百千〇]+)*)\*\*(.*)$")
_BRANCH_TAIL = re.compile(r"(?:の[一二三四五六七八九十百千〇]+)*")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_LIST_INTRO = re.compile(r"次に掲げる|次の各号|次のいずれか|左に掲げる|次の表|次のとおり")
_ITEM_END = re.compile(r"(?:こと|とき|もの|者|場合|ところ)。$")
_CONTINUE = re.compile(r"^(?:ただし|この場合において|この場合には|この場合に)")


def kanji_number(n: int) -> str:
    """漢数字 as e-Gov writes numbers: 二十三, 百五, 千二百."""
    if n == 0:
        return "〇"
    out = ""
    for value, unit in ((1000, "千"), (100, "百"), (10, "十")):
        q, n = divmod(n, value)
        if q:
            out += ("" if q == 1 else KANJI[q]) + unit
    return out + (KANJI[n] if n else "")


def kanji_to_int(s: str) -> int:
    total, cur = 0, 0
    for ch in s:
        if ch in "十百千":
            total += (cur or 1) * {"十": 10, "百": 100, "千": 1000}[ch]
            cur = 0
        else:
            cur = cur * 10 + KANJI.index(ch)
    return total + cur


def arabic_label(label: str) -> str:
    """第七十五条の二 -> 第75条の2 (the project's article labels)."""
    return re.sub(r"[一二三四五六七八九十百千〇]+", lambda m: str(kanji_to_int(m.group())), label)


def git_show(gitdir: Path, path: str) -> str:
    return subprocess.run(["git", "--git-dir", str(gitdir), "show", f"HEAD:{path}"],
                          check=True, capture_output=True).stdout.decode("utf-8")


def label_key(label: str) -> tuple[int, ...]:
    """第七十五条の二の三 -> (75, 2, 3): the order of article numbers."""
    main, *branches = label.removeprefix("第").split("条")[0:1] + label.split("条", 1)[1:]
    nums = [kanji_to_int(main)] + [kanji_to_int(b) for b in re.findall(
        r"の([一二三四五六七八九十百千〇]+)", branches[0] if branches else "")]
    return tuple(nums)


def _increasing(keys: list[tuple[int, ...]]) -> set[int]:
    """Positions of a longest strictly increasing subsequence of `keys`."""
    import bisect
    tails: list[tuple[int, ...]] = []
    tail_pos: list[int] = []
    prev = [-1] * len(keys)
    for i, k in enumerate(keys):
        j = bisect.bisect_left(tails, k)
        if j == len(tails):
            tails.append(k)
            tail_pos.append(i)
        else:
            tails[j], tail_pos[j] = k, i
        prev[i] = tail_pos[j - 1] if j else -1
    out, i = set(), tail_pos[-1] if tail_pos else -1
    while i >= 0:
        out.add(i)
        i = prev[i]
    return out


def parse_markdown(md: str) -> tuple[str, str, list[tuple[str, list[str]]]]:
    """(title, law number line, [(article label, body lines)]) of the 本則."""
    lines = md.splitlines()
    title = next(ln[2:].strip() for ln in lines if ln.startswith("# "))
    number = next((ln.strip("*").strip() for ln in lines if ln.startswith("*（")), "")
    # Every anchored bold label with nothing after it on its line is a candidate article.
    blocks: list[tuple[str | None, list[str]]] = []
    pending_anchor = False
    for ln in lines:
        ln = ln.rstrip()
        if _ANCHOR.match(ln):
            pending_anchor = True
            continue
        if not ln.strip() or ln.startswith("# ") or ln.startswith("*（"):
            continue
        m = _BOLD.match(ln)
        if m and pending_anchor and _BRANCH_TAIL.fullmatch(m.group(2).strip()):
            # 「**第二十七条の二十二**の二」: the source cuts two-level labels so.
            blocks.append((m.group(1) + m.group(2).strip(), []))
        elif blocks:
            text = _LINK.sub(r"\1", ln)
            if m:                         # a cross-reference in bold at a line start
                text = m.group(1) + _LINK.sub(r"\1", m.group(2))
            blocks[-1][1].append(text.strip())
        pending_anchor = False
    # The 本則 ends at the first 第一条 after the first article: a 附則 begins.
    end = next((i for i, (label, _) in enumerate(blocks) if i and label == "第一条"),
               len(blocks))
    blocks = blocks[:end]
    # Anchors out of order are cells of a table (読み替え表) or references: a longest
    # increasing run of article numbers keeps the real ones; the rest is body text.
    real = _increasing([label_key(label) for label, _ in blocks])
    main: list[tuple[str, list[str]]] = []
    for i, (label, body) in enumerate(blocks):
        if i in real or not main:
            main.append((label, list(body)))
        else:
            main[-1][1].extend([label] + body)
    return title, number, main


def render_article(label: str, body: list[str]) -> list[str]:
    """e-Gov display lines: 「第一条　…」, 項 「２　…」, 号 「一　…」."""
    if not body:
        return [f"{label}　削除"]
    out: list[str] = []
    para, item, in_list = 1, 0, False
    for i, line in enumerate(body):
        if i == 0:
            out.append(f"{label}　{line}")
        elif _CONTINUE.match(line) and out:
            out[-1] += line
            continue
        elif in_list and item and line.endswith("をいう。") and len(body[i - 1]) <= 40 \
                and not body[i - 1].endswith("。"):
            out[-1] += "　" + line        # 「一　借地権　建物の所有を…をいう。」
            continue
        elif in_list and (not line.endswith("。") or _ITEM_END.search(line)):
            item += 1
            out.append(f"{kanji_number(item)}　{line}")
            continue
        else:
            para += 1
            item = 0
            out.append(f"{str(para).translate(str.maketrans('0123456789', '０１２３４５６７８９'))}"
                       f"　{line}")
        in_list = bool(_LIST_INTRO.search(line))
    return out


def law_text(title: str, number: str, articles: list[tuple[str, list[str]]]) -> str:
    lines = [title, number, ""]
    for label, body in articles:
        lines.extend(render_article(label, body))
    return "\n".join(lines) + "\n"


def questions(samples: list[dict], kept: dict[str, tuple[str, set[str]]]) -> list[dict]:
    """lawqa_jp samples as the project's questions; gold from the context's articles."""
    out = []
    for s in samples:
        gold, law = [], None
        for ln in s["コンテキスト"].splitlines():
            if ln.startswith("## "):
                law = ln[3:].strip()
            elif ln.startswith("### ") and law in kept:
                art = unicodedata.normalize("NFKC", ln[4:].strip())
                file, labels = kept[law]
                g = {"file": file, "article": art}
                if art in labels and g not in gold:
                    gold.append(g)
                elif art not in labels:
                    print(f"{s['ファイル名']}: {law} {art} is not an article of {file}",
                          file=sys.stderr)
        if not gold:
            continue
        choices = dict(re.match(r"([a-d])\s*(.*)", c).groups()
                       for c in s["選択肢"].splitlines() if re.match(r"[a-d]\s", c))
        answer = choices.get(s["output"].strip(), "")
        num = re.search(r"問題番号(\d+)", s["ファイル名"])
        qid = f"lawqa-{s['ファイル名'].split('_')[0]}-{num.group(1) if num else len(out)}"
        cites = re.search(r"第[0-9一二三四五六七八九十百千]+条", s["問題文"]) is not None
        # The choices carry what is asked (「次のうち、正しいものを教えてください。」): the
        # query is the question with its four choices, as a user would paste it.
        query = s["問題文"].strip() + "\n" + "\n".join(
            f"{c}　{t}" for c, t in sorted(choices.items()))
        out.append({"id": qid, "question": query, "answer": answer,
                    "must_include": [], "gold": gold,
                    "type": "multi" if len(gold) > 1 else ("lookup" if cites else "paraphrase")})
    ids: dict[str, int] = {}
    for q in out:                      # ids unique even where lawqa repeats a number
        n = ids.get(q["id"], 0)
        ids[q["id"]] = n + 1
        if n:
            q["id"] += f"-{n + 1}"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lawqa", type=Path, required=True, help="lawqa_jp git directory")
    ap.add_argument("--japan-law", type=Path, required=True, help="japan-law git directory")
    ap.add_argument("--out", type=Path, default=REPO / "corpus" / "laws" / "lawqa")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    kept: dict[str, tuple[str, set[str]]] = {}
    for law_id, (file, title, kind) in LAWS.items():
        md = git_show(args.japan_law, f"data/markdown/{kind}/{law_id}.md")
        name, number, articles = parse_markdown(md)
        text = law_text(name, number, articles)
        (args.out / file).write_text(text, encoding="utf-8")
        kept[title] = (file, {arabic_label(a) for a, _ in articles})
        print(f"{file}: {len(articles)} articles, {len(text.encode()) // 1024} KiB",
              file=sys.stderr)
    samples = json.loads(git_show(args.lawqa, "data/selection.json"))["samples"]
    qs = questions(samples, kept)
    with (args.out / "questions.jsonl").open("w", encoding="utf-8") as fh:
        for q in qs:
            fh.write(json.dumps(q, ensure_ascii=False) + "\n")
    print(f"questions.jsonl: {len(qs)} of {len(samples)} questions have gold in these laws",
          file=sys.stderr)


if __name__ == "__main__":
    main()
