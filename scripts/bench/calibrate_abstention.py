#!/usr/bin/env python3
"""Calibrate the abstention decision (rag/abstention.py) on question sets, retrieval only.

    python scripts/bench/calibrate_abstention.py \\
        --set corpus/public/questions.jsonl /tmp/i20-public \\
        --set corpus/questions.jsonl /tmp/i20-sample \\
        --set corpus/heldout.jsonl /tmp/i20-sample \\
        [--max-false-abstention 0.10] [--save] [--json]

Each --set is a question set and the index its gold files are in; the old form
`--index DIR QUESTIONS...` still works. For every question the retrieval signals are
computed (no model runs). Reported, all measured on questions the model was not fitted on:
  - cross-validated: stratified 5 and 10 folds over the index's questions pooled,
    repeated over --repeats seeded fold assignments;
  - held-out sets: for each set, a model calibrated on the index's other sets decides it;
  - the old single threshold on top similarity (generate.min_score), for comparison,
    cross-validated the same way.
Each index gets its own model (similarities are comparable only within one index).
--save writes it, calibrated on all of that index's questions, to INDEX/abstention.json
with these figures in its `meta`.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rag.abstention import (Vocabulary, calibrate, cross_validate, rates,  # noqa: E402
                            retrieval_signals)
from rag.evaluation.questions import load_questions  # noqa: E402
from rag.retrieval.retriever import Retriever  # noqa: E402


def collect(path: Path, retriever: Retriever, vocabulary: Vocabulary, k: int, mode: str):
    qs = load_questions(path)
    hits = retriever.search_many([q.question for q in qs], k=k, mode=mode)
    return [(q, retrieval_signals(q.question, h, vocabulary, retriever.thesaurus), not q.gold)
            for q, h in zip(qs, hits)]


def similarity_only(examples, max_false: float, repeats: int) -> dict:
    """The old rule (generate.min_score), cross-validated on the same folds as the model:
    abstain below the similarity that keeps false abstention on the training folds
    within the share calibrate() aims at."""
    folds, decided = 5, []
    for r in range(repeats):
        order = list(examples)
        if r:
            random.Random(r).shuffle(order)
        un = [e for e in order if e[1]]
        an = [e for e in order if not e[1]]
        for f in range(folds):
            ans = sorted(s.top_similarity for i, (s, _) in enumerate(an) if i % folds != f)
            t = ans[int(max_false * 0.8 * len(ans))]
            decided += [(s.top_similarity < t, u) for s, u in un[f::folds] + an[f::folds]]
    ab = [a for a, u in decided if u]
    fa = [a for a, u in decided if not u]
    return {"abstention": sum(ab) / len(ab), "false_abstention": sum(fa) / len(fa)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("questions", nargs="*", type=Path, help="question sets of --index")
    ap.add_argument("--index", type=Path)
    ap.add_argument("--set", nargs=2, action="append", default=[], metavar=("QUESTIONS", "INDEX"))
    ap.add_argument("-k", type=int, default=5)
    ap.add_argument("--mode", default="hybrid")
    ap.add_argument("--max-false-abstention", type=float, default=0.10,
                    help="largest share of answerable questions allowed to abstain")
    ap.add_argument("--save", action="store_true",
                    help="write each index's calibrated parameters to INDEX/abstention.json")
    ap.add_argument("--signals", type=Path, help="also write every question's signals (JSONL)")
    ap.add_argument("--repeats", type=int, default=8,
                    help="cross-validate over this many seeded fold assignments")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sets = [(Path(q), Path(i)) for q, i in args.set]
    if args.questions:
        if args.index is None:
            ap.error("question sets given without --set need --index")
        sets += [(q, args.index) for q in args.questions]
    if not sets:
        ap.error("name at least one question set (--set QUESTIONS INDEX)")
    retrievers: dict[Path, tuple[Retriever, Vocabulary]] = {}
    per_set: dict[str, list] = {}
    for qpath, index in sets:
        if index not in retrievers:
            r = Retriever(index)
            retrievers[index] = (r, Vocabulary(r.passages))
        r, vocab = retrievers[index]
        per_set[str(qpath)] = collect(qpath, r, vocab, args.k, args.mode)
    # One model per index: similarities are only comparable within one index (a larger
    # corpus gives every question a closer nearest passage), so each index is calibrated
    # on its own question sets and keeps its parameters beside its CURRENT.
    mf = args.max_false_abstention
    report = {"k": args.k, "mode": args.mode, "max_false_abstention": mf, "indexes": {}}
    for index, (retriever, _) in retrievers.items():
        names = [str(q) for q, i in sets if i == index]
        examples = [(s, u) for n in names for _, s, u in per_set[n]]
        r = {"embedder": retriever.info.name, "sets": names,
             "cross_validated": {f"{folds}-fold x{args.repeats}": cross_validate(
                 examples, folds, args.repeats, max_false=mf) for folds in (5, 10)},
             "similarity_only_cross_validated": similarity_only(examples, mf, args.repeats),
             "held_out_sets": {}}
        for name in names:
            train = [(s, u) for n in names if n != name for _, s, u in per_set[n]]
            if len({u for _, u in train}) == 2:
                r["held_out_sets"][name] = rates(calibrate(train, max_false=mf),
                                                 [(s, u) for _, s, u in per_set[name]])
        # The old single threshold, as before: for `[generate] min_score` where the
        # calibrated model is not used.
        ans = sorted(s.top_similarity for s, u in examples if not u)
        r["min_score"] = round(ans[int(mf * len(ans))], 4) if ans else None
        model = calibrate(examples, max_false=mf)
        r["fitted_on_all"] = rates(model, examples)     # in-sample: for reference only
        r["weights"] = dict(zip(model.features, (round(w, 3) for w in model.weights)))
        if args.save:
            model.meta = {**{k: v for k, v in r.items() if k != "weights"}, "k": args.k,
                          "mode": args.mode, "max_false_abstention": mf}
            r["saved"] = str(model.save(index))
        if args.signals:
            with args.signals.open("a", encoding="utf-8") as f:
                for name in names:
                    for q, s, u in per_set[name]:
                        f.write(json.dumps({"set": name, "id": q.id, "unanswerable": u,
                                            "abstain": model.decide(s).abstain, **s.to_json()},
                                           ensure_ascii=False) + "\n")
        report["indexes"][str(index)] = r
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=1))
        return
    for index, r in report["indexes"].items():
        cv = next(iter(r["cross_validated"].values()))
        print(f"{index} ({r['embedder']}, {args.mode} k={args.k}): {cv['answerable']} "
              f"answerable / {cv['unanswerable']} unanswerable questions")
        for name, c in r["cross_validated"].items():
            print(f"  model, {name} cross-validated: abstains on {c['abstention']:.0%} of "
                  f"unanswerable, {c['false_abstention']:.0%} of answerable")
        so = r["similarity_only_cross_validated"]
        print(f"  similarity threshold alone, 5-fold x{args.repeats}: {so['abstention']:.0%} / "
              f"{so['false_abstention']:.0%}  (min_score = {r['min_score']} on all questions)")
        for name, h in r["held_out_sets"].items():
            print(f"  {name} held out (fitted on the index's other sets): "
                  f"{h['abstention']:.0%} of {h['unanswerable']} unanswerable, "
                  f"{h['false_abstention']:.0%} of {h['answerable']} answerable")
        if "saved" in r:
            print(f"  saved to {r['saved']}")


if __name__ == "__main__":
    main()
