"""A SciFact stand-in for screening prioritisation (seeded), in the CLEF TAR layout ``rankwise screening`` reads.

One test claim = one review topic (``--topics`` of them, drawn with ``--seed``). Its candidates are
the claim's relevant abstracts plus a seeded sample of other SciFact abstracts, ``--candidates`` in
all, shuffled: the pool a Boolean search would return, judged in full as CLEF TAR does (qrels.txt
gives every candidate a grade, 1 for SciFact's relevant ones). corpus.jsonl holds every candidate.

    RANKWISE_DATA=../shared/data/beir python bench/make_screening_scifact.py --out /tmp/screening-scifact
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _scifact_build import load, scifact_folder, write_folder, write_jsonl  # noqa: E402


def build(source: Path, out: Path, *, topics: int, candidates: int, seed: int) -> dict[str, int]:
    claims, qrels, corpus = load(source)
    rng = random.Random(seed)
    ids = sorted(claims, key=int)
    rng.shuffle(ids)
    everything = sorted(corpus)
    chosen: list[tuple[str, list[str], set[str]]] = []
    for qid in ids:
        if len(chosen) == topics:
            break
        relevant = {d for d, g in qrels[qid].items() if g > 0 and d in corpus}
        if not relevant:
            continue
        others = [d for d in rng.sample(everything, min(len(everything), candidates + len(relevant)))
                  if d not in relevant][: max(0, candidates - len(relevant))]
        pool = sorted(relevant) + others
        rng.shuffle(pool)
        chosen.append((qid, pool, relevant))

    def fill(folder: Path) -> None:
        (folder / "topics").mkdir()
        qrels_lines, used = [], set()
        for qid, pool, relevant in chosen:
            (folder / "topics" / f"CD{qid}").write_text(
                f"Topic: CD{qid}\n\nTitle: {claims[qid]}\n\nQuery:\n{claims[qid]}\n\nPids:\n"
                + "".join(f"    {d}\n" for d in pool), encoding="utf-8")
            qrels_lines += [f"CD{qid} 0 {d} {1 if d in relevant else 0}" for d in pool]
            used.update(pool)
        (folder / "qrels.txt").write_text("\n".join(qrels_lines) + "\n", encoding="utf-8")
        write_jsonl(folder / "corpus.jsonl", [corpus[d] for d in sorted(used)])

    write_folder(out, fill)
    return {"topics": len(chosen), "candidates": sum(len(p) for _, p, _ in chosen),
            "relevant": sum(len(r) for _, _, r in chosen)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default="scifact", help="SciFact folder or name under $RANKWISE_DATA")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--topics", type=int, default=50)
    p.add_argument("--candidates", type=int, default=200, help="candidates per topic")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    print(build(scifact_folder(a.source), a.out, topics=a.topics, candidates=a.candidates, seed=a.seed))


if __name__ == "__main__":
    main()
