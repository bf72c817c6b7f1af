"""SciFact-long: every SciFact document becomes a long one, its own abstract placed at a seeded
position among ``--fillers`` (default 7) other abstracts of the corpus; queries and qrels unchanged.

So a relevant document is still relevant (its abstract is in it, whole), but where the abstract
sits (first, second, ..., last of 8) is known: ``positions.tsv`` beside the corpus records, for
every long document, its own abstract's position (0-based), the number of abstracts and the filler
ids, which is what :mod:`rankwise.eval.position_bias` buckets by. Each abstract is written as
``title. text`` inside the long document's text, and the long document's title is empty by
default (``--keep-title`` keeps the original title as the title: a title repeated in every passage
then tells every passage which document it belongs to, which hides the position effect).

Every choice comes from ``random.Random(f"{seed}:{doc_id}")``: the same seed gives the same files,
whatever else changes. ``--queries N`` keeps the first N judged queries of ``--split``, ``--docs M``
keeps their relevant documents plus a seeded sample of the others, M in all (fillers are still
drawn from the whole corpus). The output is a BEIR folder (corpus.jsonl, queries.jsonl,
qrels/<split>.tsv, positions.tsv, construction.json), generated, never stored in git:

    python bench/make_scifact_long.py --out ~/data/scifact-long --queries 100 --docs 1000 --seed 0
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rankwise.retrieval.files import atomic_open, write_json  # noqa: E402
from rankwise.retrieval.formats import Corpus, iter_qrels, read_queries  # noqa: E402

POSITIONS = "positions.tsv"


def abstract(title: str, text: str) -> str:
    """One abstract as it appears inside a long document."""
    title = title.strip()
    if title and title[-1] not in ".?!":
        title += "."
    return f"{title} {text.strip()}".strip()


def make_long(source: str | Path, out: str | Path, *, seed: int = 0, fillers: int = 7, split: str = "test",
              queries: int = 0, docs: int = 0, keep_title: bool = False) -> dict[str, Any]:
    """Write SciFact-long (any BEIR folder works) from ``source`` to ``out``; return the construction record."""
    source, out = Path(source), Path(out)
    corpus = list(Corpus(source))
    if len(corpus) <= fillers:
        raise ValueError(f"{source}: {len(corpus)} documents cannot give {fillers} fillers each")
    qrels: dict[str, list[tuple[str, int]]] = {}
    for _, qid, did, rel in iter_qrels(source / "qrels" / f"{split}.tsv"):
        qrels.setdefault(qid, []).append((did, rel))
    all_queries = read_queries(source / "queries.jsonl")
    kept_q = [q for q in all_queries if q in qrels]
    if queries:
        kept_q = kept_q[:queries]
    ids = [d.doc_id for d in corpus]
    if docs:
        relevant = {d for q in kept_q for d, _ in qrels[q]}
        others = [d for d in ids if d not in relevant]
        sample = random.Random(f"{seed}:sample").sample(others, max(0, min(len(others), docs - len(relevant))))
        keep = relevant | set(sample)
    else:
        keep = set(ids)
    by_id = {d.doc_id: d for d in corpus}
    with atomic_open(out / "corpus.jsonl") as fh, atomic_open(out / POSITIONS) as pos:
        pos.write("doc-id\tposition\tabstracts\tfillers\n")
        for doc in corpus:
            if doc.doc_id not in keep:
                continue
            rng = random.Random(f"{seed}:{doc.doc_id}")
            drawn = rng.sample(range(len(ids)), fillers + 1)  # one spare, in case the document draws itself
            chosen = [i for i in drawn if ids[i] != doc.doc_id][:fillers]
            position = rng.randrange(fillers + 1)
            parts = [by_id[ids[i]] for i in chosen]
            parts.insert(position, doc)
            text = " ".join(abstract(p.title, p.text) for p in parts)
            title = doc.title if keep_title else ""
            fh.write(json.dumps({"_id": doc.doc_id, "title": title, "text": text}) + "\n")
            pos.write(f"{doc.doc_id}\t{position}\t{fillers + 1}\t{','.join(ids[i] for i in chosen)}\n")
    with atomic_open(out / "queries.jsonl") as fh:
        for q in kept_q:
            fh.write(json.dumps({"_id": q, "text": all_queries[q]}) + "\n")
    with atomic_open(out / "qrels" / f"{split}.tsv") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for q in kept_q:
            for d, rel in qrels[q]:
                fh.write(f"{q}\t{d}\t{rel}\n")
    record = {"source": str(source), "seed": seed, "fillers": fillers, "split": split, "queries": len(kept_q),
              "documents": len(keep), "keep_title": keep_title}
    write_json(out / "construction.json", record)
    return record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default=None, help="BEIR folder (default: $RANKWISE_DATA/scifact)")
    p.add_argument("--out", required=True, help="output folder (outside git)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fillers", type=int, default=7, help="other abstracts per document")
    p.add_argument("--split", default="test")
    p.add_argument("--queries", type=int, default=0, help="first N judged queries (0 = all)")
    p.add_argument("--docs", type=int, default=0, help="documents kept: the relevant ones plus a sample (0 = all)")
    p.add_argument("--keep-title", action="store_true", help="keep each document's title as its title")
    args = p.parse_args()
    import os

    source = Path(args.source or Path(os.environ.get("RANKWISE_DATA", "../shared/data/beir")) / "scifact")
    if not (source / "corpus.jsonl").is_file():
        print(f"{source}: no corpus.jsonl (set --source or RANKWISE_DATA)", file=sys.stderr)
        raise SystemExit(2)
    record = make_long(source, args.out, seed=args.seed, fillers=args.fillers, split=args.split,
                       queries=args.queries, docs=args.docs, keep_title=args.keep_title)
    print(json.dumps(record))


if __name__ == "__main__":
    main()
