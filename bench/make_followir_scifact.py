"""A small FollowIR-style instruction set from SciFact (seeded), in the layout ``rankwise followir`` reads.

Each of ``--queries`` test claims (drawn with ``--seed``) gets an original instruction and a changed
one that adds an exclusion: ``Documents that mention "TERM" are not relevant.``, TERM a content word
(6+ letters, not in the claim) of one of the claim's relevant abstracts, drawn with the seed and
preferring a word found in some but not all of them. ``qrels/og.tsv`` holds SciFact's judgements;
``qrels/changed.tsv`` the same documents, those containing TERM (as a word, any case) set to 0.
The corpus is every judged document plus a seeded sample of the others, ``--docs`` in all (0: all
of SciFact).

    RANKWISE_DATA=../shared/data/beir python bench/make_followir_scifact.py --out /tmp/followir-scifact
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _scifact_build import load, scifact_folder, write_folder, write_jsonl  # noqa: E402

OG_INSTRUCTION = "Relevant documents are scientific abstracts that give evidence supporting or refuting the claim."
STOP = frozenset("""about above after again against among because before being below between both could during
each either every found further having however others their there these those through under until which while
within without would should results showed shown study studies using based compared associated increased""".split())
_WORD = re.compile(r"[a-z]+")


def words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def build(source: Path, out: Path, *, queries: int, docs: int, seed: int) -> dict[str, int]:
    claims, qrels, corpus = load(source)
    rng = random.Random(seed)
    ids = sorted(claims, key=int)
    rng.shuffle(ids)
    rows, og_lines, changed_lines, kept_docs = [], [], [], set()
    excluded = 0
    for qid in ids:
        if len(rows) == queries:
            break
        relevant = sorted(d for d, g in qrels[qid].items() if g > 0 and d in corpus)
        if not relevant:
            continue
        doc_words = {d: words(corpus[d]["title"] + " " + corpus[d]["text"]) for d in relevant}
        claim_words = words(claims[qid])
        pool = sorted({w for ws in doc_words.values() for w in ws
                       if len(w) >= 6 and w not in claim_words and w not in STOP})
        if not pool:
            continue
        partial = [w for w in pool if 0 < sum(w in ws for ws in doc_words.values()) < len(relevant)]
        term = rng.choice(partial or pool)
        rows.append({"_id": qid, "query": claims[qid], "instruction_og": OG_INSTRUCTION,
                     "instruction_changed": f'{OG_INSTRUCTION} Documents that mention "{term}" are not relevant.'})
        for d in relevant:
            og_lines.append(f"{qid}\t{d}\t1")
            gone = term in doc_words[d]
            excluded += gone
            changed_lines.append(f"{qid}\t{d}\t{0 if gone else 1}")
            kept_docs.add(d)
    others = sorted(set(corpus) - kept_docs)
    if docs:
        others = rng.sample(others, max(0, min(len(others), docs - len(kept_docs))))
    chosen = sorted(kept_docs | set(others))

    def fill(folder: Path) -> None:
        write_jsonl(folder / "queries.jsonl", rows)
        write_jsonl(folder / "corpus.jsonl", [corpus[d] for d in chosen])
        (folder / "qrels").mkdir()
        for name, lines in (("og", og_lines), ("changed", changed_lines)):
            (folder / "qrels" / f"{name}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(lines) + "\n")

    write_folder(out, fill)
    return {"queries": len(rows), "documents": len(chosen), "judged": len(og_lines), "made_non_relevant": excluded}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default="scifact", help="SciFact folder or name under $RANKWISE_DATA")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--docs", type=int, default=0, help="corpus size (0: all of SciFact)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    print(build(scifact_folder(a.source), a.out, queries=a.queries, docs=a.docs, seed=a.seed))


if __name__ == "__main__":
    main()
