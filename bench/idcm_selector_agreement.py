"""How often an IDCM selector keeps the scorer's best passage (IDCM select=K then equals MaxP).

For held-out (query, document) pairs whose teacher passage scores a `rankwise train idcm-selector`
run cached (OUT/teacher/scores.jsonl), each selector ranks the document's passages; the figures are
the share of documents whose teacher-best passage is among the selector's top K (the document's
IDCM score is then exactly its MaxP score) and the mean overlap of the selector's and the teacher's
top K. Selectors: ``bm25`` and ``dense:MODEL`` as :mod:`rankwise.rerank.idcm` builds them, beside the
expected figures of a random choice.

    python bench/idcm_selector_agreement.py --out SELECTOR_OUT --corpus C --queries Q --qrels QRELS \
        --skip-queries 16 --queries-used 4 --depth 5 --passages 96 --max-passages 16 \
        --selectors bm25,dense:MINILM,dense:SELECTOR_OUT
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rankwise.rerank.idcm import DenseSelector, bm25_passage_scores, top_passages  # noqa: E402
from rankwise.retrieval.passages import Splitter  # noqa: E402
from rankwise.training.idcm_selector import SCORES_FILE, TEACHER_DIR, SelectorInput, build_examples  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="the idcm-selector training folder (its teacher cache)")
    p.add_argument("--corpus", required=True)
    p.add_argument("--queries", required=True)
    p.add_argument("--qrels")
    p.add_argument("--skip-queries", type=int, default=0, help="the first N training queries (held out: the rest)")
    p.add_argument("--queries-used", type=int, default=4)
    p.add_argument("--depth", type=int, default=5)
    p.add_argument("--passages", type=int, default=96)
    p.add_argument("--max-passages", type=int, default=16)
    p.add_argument("--select", type=int, default=4)
    p.add_argument("--selectors", default="bm25")
    args = p.parse_args()
    data = SelectorInput(Path(args.corpus), Path(args.queries), qrels=Path(args.qrels) if args.qrels else None,
                         depth=args.depth, max_queries=args.skip_queries + args.queries_used)
    examples, _ = build_examples(data, Splitter(args.passages), max_passages=args.max_passages)
    order = list(dict.fromkeys(ex.qid for ex in examples))
    held = set(order[args.skip_queries:])
    cache = {(r["qid"], r["doc_id"]): r["scores"]
             for r in map(json.loads, (Path(args.out) / TEACHER_DIR / SCORES_FILE).read_text().splitlines())}
    examples = [ex for ex in examples if ex.qid in held and (ex.qid, ex.doc_id) in cache]
    k = args.select
    report = {"documents": len(examples), "queries": len(held), "select": k}
    chance = sum(min(k, len(ex.passages)) / len(ex.passages) for ex in examples) / len(examples)
    report["random (expected)"] = {"teacher_best_kept": round(chance, 4), f"top{k}_overlap": round(chance, 4)}
    for spec in args.selectors.split(","):
        select = bm25_passage_scores if spec == "bm25" else DenseSelector(spec.removeprefix("dense:"))
        kept, overlap = 0, 0.0
        for qid in sorted(held):
            mine = [ex for ex in examples if ex.qid == qid]
            scores = select(mine[0].query, [ex.passages for ex in mine]) if mine else []
            for ex, s in zip(mine, scores):
                teacher = cache[ex.qid, ex.doc_id]
                chosen = set(top_passages(s, k))
                kept += max(range(len(teacher)), key=teacher.__getitem__) in chosen
                overlap += len(chosen & set(top_passages(teacher, k))) / min(k, len(teacher))
        report[spec] = {"teacher_best_kept": round(kept / len(examples), 4),
                        f"top{k}_overlap": round(overlap / len(examples), 4)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
