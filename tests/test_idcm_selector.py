"""IDCM selector distillation: the loss, training lowers the KL, cached teacher scores, the trained folder
as the selector of ``idcm:dense:...``, the CLI end to end, bad input."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.passages import Splitter
from tests.conftest import write_beir
from rankwise.testing import corpus_texts
from rankwise.training.idcm_selector import SCORES_FILE, TEACHER_DIR, SelectorInput, build_examples, train_idcm_selector
from rankwise.training.losses.idcm import selector_kl
from rankwise.training.settings import TrainSettings

PASSAGES = 12  # words per passage: the documents below have 4-9 passages
STEPS = 12


class LexicalTeacher:
    """A deterministic teacher: 2 x the query words a passage contains; counts what it is asked to score."""

    def __init__(self) -> None:
        self.calls, self.pairs = 0, 0

    def score_pairs(self, pairs, progress=False):
        self.calls += 1
        self.pairs += len(pairs)
        return [2.0 * len(set(q.split()) & set(p.split())) for q, p in pairs]


@pytest.fixture(scope="module")
def long_beir(tmp_path_factory) -> Path:
    texts = corpus_texts()
    docs = [{"_id": f"d{i}", "title": "", "text": " ".join(texts[4 * i:4 * i + 4])} for i in range(8)]
    queries = [{"_id": f"q{i}", "text": " ".join(texts[4 * i + 1].split()[:4])} for i in range(4)]
    folder = write_beir(tmp_path_factory.mktemp("long") / "beir", docs, queries, [(f"q{i}", f"d{i}", 1)
                                                                                  for i in range(4)])
    lines = [f"q{i} Q0 d{(i + j) % 8} {j + 1} {10 - j} bm25" for i in range(4) for j in range(4)]
    (folder / "run.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _data(folder: Path) -> SelectorInput:
    return SelectorInput(folder / "corpus.jsonl", folder / "queries.jsonl", run=folder / "run.tsv")


def _settings(steps: int) -> TrainSettings:
    return TrainSettings(max_steps=steps, batch_size=4, lr=3e-3, warmup_ratio=0.0, save_steps=1000, logging_steps=5)


def test_selector_kl_matches_a_hand_computed_value():
    teacher = torch.tensor([[2.0, 0.0, 7.0]])
    student = torch.tensor([[0.0, 0.0, -3.0]])
    mask = torch.tensor([[True, True, False]])  # the third passage is padding
    p = [math.exp(2) / (math.exp(2) + 1), 1 / (math.exp(2) + 1)]
    expected = p[0] * math.log(p[0] / 0.5) + p[1] * math.log(p[1] / 0.5)  # 0.3278
    assert selector_kl(student, teacher, mask).item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.3278, abs=1e-4)
    # temperature 2 halves the teacher's logits: p = softmax([1, 0])
    p2 = [math.e / (math.e + 1), 1 / (math.e + 1)]
    expected2 = p2[0] * math.log(p2[0] / 0.5) + p2[1] * math.log(p2[1] / 0.5)
    assert selector_kl(student, teacher, mask, temperature=2.0).item() == pytest.approx(expected2, abs=1e-6)
    assert selector_kl(teacher, teacher, mask).item() == pytest.approx(0.0, abs=1e-7)


def _kl_on(examples, model_path: str, scale: float = 20.0) -> float:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(model_path, device="cpu")
    queries = st.encode([ex.query for ex in examples], convert_to_tensor=True, normalize_embeddings=True)
    passages = st.encode([p for ex in examples for p in ex.passages], convert_to_tensor=True,
                         normalize_embeddings=True)
    total, start = 0.0, 0
    for q, ex in zip(queries, examples):
        student = scale * (passages[start:start + len(ex.passages)] @ q)
        start += len(ex.passages)
        total += selector_kl(student[None], torch.tensor([ex.teacher]), None).item()
    return total / len(examples)


@pytest.fixture(scope="module")
def trained(long_beir, tiny_encoder, tmp_path_factory):
    out = tmp_path_factory.mktemp("selector") / "out"
    teacher = LexicalTeacher()
    result = train_idcm_selector(_data(long_beir), out, scorer=teacher, model=str(tiny_encoder), passages=PASSAGES,
                                 settings=_settings(STEPS), progress=False)
    return out, teacher, result


def test_training_lowers_the_kl_on_the_training_data(long_beir, tiny_encoder, trained):
    out, teacher, result = trained
    examples, _ = build_examples(_data(long_beir), Splitter(PASSAGES))
    cache = {(r["qid"], r["doc_id"]): r["scores"]
             for r in map(json.loads, (out / TEACHER_DIR / SCORES_FILE).read_text().splitlines())}
    for ex in examples:
        ex.teacher = cache[ex.qid, ex.doc_id]
    before, after = _kl_on(examples, str(tiny_encoder)), _kl_on(examples, str(out))
    assert result.steps == STEPS
    assert after < 0.5 * before, (before, after)  # measured: 0.65 -> 0.11


def test_teacher_scores_are_cached_and_a_rerun_scores_nothing(long_beir, tiny_encoder, trained, tmp_path):
    import shutil

    trained_out, teacher, _ = trained
    out = tmp_path / "out"
    shutil.copytree(trained_out, out)  # reruns here leave the module's trained folder as the other tests expect
    examples, counts = build_examples(_data(long_beir), Splitter(PASSAGES))
    assert counts["documents"] == 16 and len(examples) == 16
    assert teacher.pairs == sum(len(ex.passages) for ex in examples)  # every passage scored once
    records = (out / TEACHER_DIR / SCORES_FILE).read_text().splitlines()
    assert len(records) == 16
    again = LexicalTeacher()
    train_idcm_selector(_data(long_beir), out, scorer=again, model=str(tiny_encoder), passages=PASSAGES,
                        settings=_settings(STEPS), progress=False)
    assert again.calls == 0
    fewer = SelectorInput(long_beir / "corpus.jsonl", long_beir / "queries.jsonl", run=long_beir / "run.tsv", depth=2)
    train_idcm_selector(fewer, out, scorer=again, model=str(tiny_encoder), passages=PASSAGES,
                        settings=_settings(1), force=True, progress=False)  # other candidates: a subset, cached
    assert again.calls == 0
    with pytest.raises(InputError, match="teacher passage scores with other settings"):
        train_idcm_selector(_data(long_beir), out, scorer=again, model=str(tiny_encoder), passages=PASSAGES + 1,
                            settings=_settings(STEPS), progress=False)


def test_the_trained_folder_is_the_dense_selector_of_idcm(long_beir, tiny_cross_encoder, trained):
    from rankwise.rerank.idcm import IDCMReranker
    from rankwise.retrieval.formats import Corpus

    out, _, _ = trained
    reranker = IDCMReranker(f"dense:{out}>>{tiny_cross_encoder}", select=2, passages=PASSAGES)
    assert Path(reranker.selector.encoder.path) == out
    docs = list(Corpus(long_beir / "corpus.jsonl"))
    scores = reranker.score_documents([("protein cell gene", docs)])
    assert len(scores[0]) == len(docs) and all(math.isfinite(s) for s in scores[0])
    assert reranker.max_scored == 2
    assert reranker.stats.extra["passages_scored"] == 2 * len(docs) < reranker.stats.extra["passages"]


def test_cli_end_to_end(long_beir, tiny_encoder, tiny_cross_encoder, tmp_path, capsys):
    from rankwise.cli import main

    out = tmp_path / "sel"
    main(["train", "idcm-selector", "--corpus", str(long_beir), "--scorer", f"cross-encoder:{tiny_cross_encoder}",
          "--model", str(tiny_encoder), "--out", str(out), "--runs", str(long_beir / "run.tsv"),
          "--passages", str(PASSAGES), "--max-steps", "2", "--batch-size", "4", "--json"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["out"] == str(out)
    assert (out / "config_sentence_transformers.json").is_file()
    assert len((out / TEACHER_DIR / SCORES_FILE).read_text().splitlines()) == 16
    recorded = json.loads((out / "rankwise_training.json").read_text())
    assert recorded["kind"] == "idcm-selector" and recorded["loss"] == "kl" and recorded["passages"] == PASSAGES


def test_a_run_query_not_in_the_queries_is_a_one_line_error(long_beir, tiny_encoder, tmp_path, capsys):
    from rankwise.cli import main

    run = tmp_path / "run.tsv"
    run.write_text("q0 Q0 d0 1 3.0 x\nq0 Q0 d1 2 2.0 x\nnope Q0 d2 1 1.0 x\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "idcm-selector", "--corpus", str(long_beir), "--scorer", "unused", "--model",
              str(tiny_encoder), "--out", str(tmp_path / "sel"), "--runs", str(run)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert re.search(rf"{re.escape(str(run))}:3: field 'qid': query id 'nope' is not in .*queries.jsonl", err[-1])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(InputError, match="the corpus is empty"):
        build_examples(SelectorInput(empty, long_beir / "queries.jsonl", run=long_beir / "run.tsv"), Splitter(12))
