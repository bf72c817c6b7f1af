"""Training on tiny models: every loss trains and saves a model that loads back; resume; bad input; CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rankwise.retrieval.errors import InputError
from rankwise.training.bi_encoder import train_bi_encoder
from rankwise.training.cross_encoder import train_cross_encoder
from rankwise.training.data import TrainingInput
from tests._helpers import assert_reranks_with, settings, weights, write_tuples


@pytest.mark.parametrize("loss", ["contrastive", "star", "margin-mse", "kl"])
def test_bi_encoder_losses_train_and_load_back(tmp_path, tiny_encoder, loss):
    from sentence_transformers import SentenceTransformer

    from rankwise.retrieval.encoder import Encoder

    tuples, scores = write_tuples(tmp_path)
    data = TrainingInput(tuples, teacher=scores if loss in ("margin-mse", "kl") else None)
    result = train_bi_encoder(str(tiny_encoder), data, tmp_path / "out", loss=loss, settings=settings(),
                              progress=False)
    assert result.steps == 3 and result.final_loss is not None and np.isfinite(result.final_loss)
    before, after = weights(tiny_encoder), weights(tmp_path / "out")
    assert before.keys() == after.keys()
    assert any(not np.allclose(before[k], after[k]) for k in before)  # it learned something
    assert SentenceTransformer(str(tmp_path / "out")).encode(["heart"]).shape == (1, 32)
    assert Encoder(str(tmp_path / "out")).encode_queries(["heart"]).shape == (1, 32)
    log = [json.loads(x) for x in (tmp_path / "out" / "training_log.jsonl").read_text().splitlines()]
    assert any("loss" in e for e in log)
    summary = json.loads((tmp_path / "out" / "rankwise_training.json").read_text())
    assert summary["loss"] == loss and summary["steps"] == 3


@pytest.mark.parametrize("loss", ["bce", "lce", "margin-mse", "listnet", "plistmle"])
def test_cross_encoder_losses_train_and_rerank(tmp_path, tiny_encoder, loss):
    from rankwise.rerank.cross_encoder import CrossEncoderReranker

    tuples, scores = write_tuples(tmp_path)
    data = TrainingInput(tuples, teacher=scores if loss == "margin-mse" else None)
    result = train_cross_encoder(str(tiny_encoder), data, tmp_path / "ce", loss=loss, settings=settings(),
                                 progress=False)
    assert result.steps == 3 and np.isfinite(result.final_loss)
    embedding = "embeddings.word_embeddings.weight"
    before = next(v for k, v in weights(tiny_encoder).items() if k.endswith(embedding))
    after = next(v for k, v in weights(tmp_path / "ce").items() if k.endswith(embedding))
    assert before.shape == after.shape and not np.allclose(before, after)  # it learned something
    docs = ["heart paper", "bone notes", "x"]
    ranking = CrossEncoderReranker(str(tmp_path / "ce")).rerank("heart", docs)
    assert_reranks_with(tmp_path / "ce", ranking, "heart", docs)  # the saved model is what the reranker ranks with


def test_resume_after_interruption_gives_the_same_weights(tmp_path, tiny_encoder):
    from transformers import TrainerCallback

    class Interrupt(Exception):
        pass

    class StopAt(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 4:
                raise Interrupt

    tuples, _ = write_tuples(tmp_path)
    data = TrainingInput(tuples)
    s = settings(max_steps=6)
    straight = train_bi_encoder(str(tiny_encoder), data, tmp_path / "a", loss="star", settings=s, progress=False)
    with pytest.raises(Interrupt):
        train_bi_encoder(str(tiny_encoder), data, tmp_path / "b", loss="star", settings=s, progress=False,
                         callbacks=[StopAt()])
    assert not (tmp_path / "b" / "model.safetensors").exists()
    resumed = train_bi_encoder(str(tiny_encoder), data, tmp_path / "b", loss="star", settings=s, progress=False)
    assert resumed.resumed_from is not None and resumed.resumed_from.endswith("checkpoint-4")
    assert straight.steps == resumed.steps == 6
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-6, err_msg=k)


def test_a_run_with_other_settings_is_refused_unless_forced(tmp_path, tiny_encoder):
    tuples, _ = write_tuples(tmp_path)
    data = TrainingInput(tuples)
    train_cross_encoder(str(tiny_encoder), data, tmp_path / "ce", settings=settings(), progress=False)
    with pytest.raises(InputError, match="other settings"):
        train_cross_encoder(str(tiny_encoder), data, tmp_path / "ce", settings=settings(lr=5e-4), progress=False)
    result = train_cross_encoder(str(tiny_encoder), data, tmp_path / "ce", settings=settings(lr=5e-4), force=True,
                                 progress=False)
    assert result.resumed_from is None and result.steps == 3


def test_a_run_stopped_before_its_first_checkpoint_starts_over_with_new_settings(tmp_path, tiny_encoder):
    from rankwise.training.runner import prepare_out

    tuples, _ = write_tuples(tmp_path)
    out = tmp_path / "ce"
    prepare_out(out, "an-older-run", {"note": "stopped before any checkpoint"})
    assert (out / "checkpoints" / "run.json").is_file()
    result = train_cross_encoder(str(tiny_encoder), TrainingInput(tuples), out, settings=settings(), progress=False)
    assert result.resumed_from is None and result.steps == 3
    assert json.loads((out / "checkpoints" / "run.json").read_text())["hash"] != "an-older-run"


def test_bad_input_fails_before_training(tmp_path, tiny_encoder):
    tuples, scores = write_tuples(tmp_path)
    bad = tmp_path / "bad.tsv"
    bad.write_text(tuples.read_text() + "only a query\n", encoding="utf-8")
    with pytest.raises(InputError, match="bad.tsv:25"):
        train_cross_encoder(str(tiny_encoder), TrainingInput(bad), tmp_path / "x", settings=settings(), progress=False)
    assert not (tmp_path / "x").exists()
    empty = tmp_path / "empty.tsv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(InputError, match="no training samples"):
        train_bi_encoder(str(tiny_encoder), TrainingInput(empty), tmp_path / "y", settings=settings(), progress=False)
    short = tmp_path / "short.tsv"
    short.write_text("\n".join(scores.read_text().splitlines()[:10]) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="short.tsv"):
        train_bi_encoder(str(tiny_encoder), TrainingInput(tuples, teacher=short), tmp_path / "z", loss="margin-mse",
                         settings=settings(), progress=False)
    with pytest.raises(InputError, match="teacher"):
        train_bi_encoder(str(tiny_encoder), TrainingInput(tuples), tmp_path / "z", loss="kl", settings=settings(),
                         progress=False)
    with pytest.raises(InputError, match="curriculum"):
        train_cross_encoder(str(tiny_encoder), TrainingInput(tuples), tmp_path / "z", loss="listnet",
                            settings=settings(curriculum="bm25"), progress=False)


def _losses(result) -> list[float]:
    """The loss logged at each step (``logging_steps=1``)."""
    return [entry["loss"] for entry in result.log if "loss" in entry]


def assert_curriculum_changed_training(plain, curriculum, plain_out: Path, curriculum_out: Path) -> None:
    """The same run with and without a curriculum (same seed, data and steps): the first step's loss (before
    any update: only the curriculum's sample weights differ) and the trained weights must differ. A trainer
    that ignored the curriculum would give bit-identical runs."""
    assert plain.steps == curriculum.steps == 3
    assert np.isfinite(curriculum.final_loss)
    first_plain, first_curriculum = _losses(plain)[0], _losses(curriculum)[0]
    assert first_curriculum != pytest.approx(first_plain, rel=1e-4)
    before, after = weights(plain_out), weights(curriculum_out)
    assert before.keys() == after.keys()
    assert any(not np.allclose(before[k], after[k], atol=1e-7) for k in before)


@pytest.mark.parametrize("loss", ["margin-mse", "lce", "bce"])
def test_teacher_curriculum_trains_cross_encoder(tmp_path, tiny_encoder, loss):
    tuples, scores = write_tuples(tmp_path)
    data = TrainingInput(tuples, teacher=scores)
    runs = {c: train_cross_encoder(str(tiny_encoder), data, tmp_path / c, loss=loss, settings=settings(curriculum=c),
                                   progress=False) for c in ("none", "teacher")}
    assert_curriculum_changed_training(runs["none"], runs["teacher"], tmp_path / "none", tmp_path / "teacher")


def test_mined_triples_train_adore_and_the_router_keeps_documents_fixed(tmp_path, synthetic_beir, tiny_encoder):
    from sentence_transformers import SentenceTransformer

    from rankwise.retrieval.cached import dense_index
    from rankwise.retrieval.encoder import Encoder
    from rankwise.retrieval.formats import Corpus

    corpus = Corpus(synthetic_beir / "corpus.jsonl")
    index = dense_index(corpus, Encoder(str(tiny_encoder)), progress=False)
    (synthetic_beir / "qrels" / "train.tsv").write_text((synthetic_beir / "qrels" / "test.tsv").read_text())
    result = train_bi_encoder(str(tiny_encoder), TrainingInput(synthetic_beir), tmp_path / "adore", loss="adore",
                              index=index, adore_depth=20, settings=settings(lr=1e-2), progress=False)
    assert result.steps == 3
    trained, original = Encoder(str(tmp_path / "adore")), Encoder(str(tiny_encoder))
    docs = ["title 1 some document text", "another one"]
    np.testing.assert_allclose(trained.encode_docs(docs), original.encode_docs(docs), atol=1e-6)
    assert not np.allclose(trained.encode_queries(["a query"]), original.encode_queries(["a query"]), atol=1e-4)
    st = SentenceTransformer(str(tmp_path / "adore"))
    np.testing.assert_allclose(st.encode_document(docs), original.encode_docs(docs), atol=1e-5)


def test_adore_refuses_an_index_of_another_encoder(tmp_path, synthetic_beir, tiny_encoder, other_tiny_encoder):
    from rankwise.retrieval.cached import dense_index
    from rankwise.retrieval.encoder import Encoder
    from rankwise.retrieval.formats import Corpus

    index = dense_index(Corpus(synthetic_beir / "corpus.jsonl"), Encoder(str(other_tiny_encoder)), progress=False)
    (synthetic_beir / "qrels" / "train.tsv").write_text((synthetic_beir / "qrels" / "test.tsv").read_text())
    with pytest.raises(InputError, match="another encoder"):
        train_bi_encoder(str(tiny_encoder), TrainingInput(synthetic_beir), tmp_path / "adore", loss="adore",
                         index=index, settings=settings(), progress=False)


def test_cli_train_prints_json(tmp_path, tiny_encoder, capsys):
    from rankwise.cli import main

    tuples, _ = write_tuples(tmp_path)
    main(["train", "cross-encoder", "--model", str(tiny_encoder), "--triples", str(tuples),
          "--out", str(tmp_path / "ce"), "--max-steps", "2", "--batch-size", "4", "--json"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["out"] == str(tmp_path / "ce")


def test_cli_bad_triples_exit_2(tmp_path, tiny_encoder, capsys):
    from rankwise.cli import main

    bad = tmp_path / "bad.tsv"
    bad.write_text("q\tp\n", encoding="utf-8")
    with pytest.raises(SystemExit) as done:
        main(["train", "bi-encoder", "--model", str(tiny_encoder), "--triples", str(bad), "--out", str(tmp_path / "o"),
              "--loss", "star"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "bad.tsv:1" in err and "Traceback" not in err


def test_cross_architecture_distillation_end_to_end(tmp_path, synthetic_beir, tiny_encoder):
    """A cross-encoder teacher scores mined triples; the bi-encoder student learns from the margins."""
    from rankwise.retrieval.cached import cached_retriever
    from rankwise.retrieval.formats import Corpus
    from rankwise.training.mining import mine_negatives

    (synthetic_beir / "qrels" / "train.tsv").write_text((synthetic_beir / "qrels" / "test.tsv").read_text())
    tuples, _ = write_tuples(tmp_path)
    teacher = tmp_path / "teacher"
    train_cross_encoder(str(tiny_encoder), TrainingInput(tuples), teacher, loss="lce", settings=settings(),
                        progress=False)
    corpus = Corpus(synthetic_beir / "corpus.jsonl")
    triples, scores = tmp_path / "mined.tsv", tmp_path / "mined.scores.tsv"
    stats = mine_negatives(corpus, synthetic_beir / "queries.jsonl", synthetic_beir / "qrels" / "train.tsv",
                           cached_retriever(corpus, "dense", str(tiny_encoder), progress=False), window=(1, 30),
                           negatives=2, teacher=f"cross-encoder:{teacher}", out=triples, scores_out=scores,
                           progress=False)
    assert stats.triples == 20 and len(scores.read_text().splitlines()) == 20
    data = TrainingInput(triples, queries=synthetic_beir / "queries.jsonl", corpus=synthetic_beir / "corpus.jsonl",
                         teacher=scores)
    result = train_bi_encoder(str(tiny_encoder), data, tmp_path / "student", loss="margin-mse", settings=settings(),
                              progress=False)
    assert result.steps == 3 and np.isfinite(result.final_loss)
    description = json.loads((tmp_path / "student" / "rankwise_training.json").read_text())
    assert description["input"]["kind"] == "ids" and description["input"]["teacher"]


def test_bm25_difficulty_follows_reciprocal_ranks():
    from rankwise.training.curriculum import BM25Difficulty
    from rankwise.training.data import TrainingSample

    ranks = {"easy q": {"p": 1, "n1": 50, "n2": 2}, "hard q": {"p": 40, "n1": 1}}
    d = BM25Difficulty(lambda q: ranks[q], depth=100)
    easy = TrainingSample("easy q", "P", ("N1", "N2"), "q1", "p", ("n1", "n2"))
    hard = TrainingSample("hard q", "P", ("N1", "N2"), "q2", "p", ("n1", "n9"))
    assert d.point(easy, -1) == 0.0 and d.point(easy, 0) == pytest.approx(1 / 50)
    assert d.point(hard, -1) == pytest.approx(1 - 1 / 40) and d.point(hard, 0) == 1.0
    assert d.point(hard, 1) == pytest.approx(1 / 101)  # not retrieved: rank depth + 1
    assert d.pair(easy, 0) < d.pair(easy, 1) < d.pair(hard, 0)
    with pytest.raises(InputError, match="document ids"):
        d.point(TrainingSample("easy q", "P", ("N",)), -1)


def test_run_difficulty_reads_ranks_from_a_trec_run(tmp_path):
    from rankwise.training.curriculum import RunDifficulty, difficulty_for
    from rankwise.training.data import TrainingSample
    from rankwise.training.settings import TrainSettings

    run = tmp_path / "bm25.trec"
    run.write_text("q1 Q0 p 1 9.0 bm25\nq1 Q0 n2 2 8.0 bm25\nq1 Q0 n1 3 7.5 bm25\nq2 Q0 n1 1 3.0 bm25\n")
    settings = TrainSettings(curriculum="bm25", curriculum_run=str(run))
    d = difficulty_for(settings, None)
    assert isinstance(d, RunDifficulty) and d.depth == 3
    sample = TrainingSample("text is not the key", "P", ("N1", "N2"), "q1", "p", ("n1", "n2"))
    assert d.point(sample, -1) == 0.0 and d.point(sample, 0) == pytest.approx(1 / 3)
    assert d.point(sample, 1) == pytest.approx(1 / 2)
    assert d.point(TrainingSample("", "P", ("N",), "q2", "p", ("n1",)), -1) == pytest.approx(1 - 1 / 4)
    with pytest.raises(InputError, match="'q7' is not in the curriculum run"):
        d.point(TrainingSample("", "P", ("N",), "q7", "p", ("n1",), source=("t.tsv", 4)), -1)
    with pytest.raises(InputError, match="keyed by query id"):
        d.point(TrainingSample("", "P", ("N",), None, "p", ("n1",)), -1)
    with pytest.raises(InputError, match="--curriculum bm25"):
        difficulty_for(TrainSettings(curriculum="teacher", curriculum_run=str(run)), None)


def test_bm25_curriculum_on_mined_id_triples(tmp_path, synthetic_beir, tiny_encoder):
    from rankwise.retrieval.cached import cached_retriever
    from rankwise.retrieval.formats import Corpus
    from rankwise.training.mining import mine_negatives

    (synthetic_beir / "qrels" / "train.tsv").write_text((synthetic_beir / "qrels" / "test.tsv").read_text())
    corpus = Corpus(synthetic_beir / "corpus.jsonl")
    triples = tmp_path / "mined.tsv"
    mine_negatives(corpus, synthetic_beir / "queries.jsonl", synthetic_beir / "qrels" / "train.tsv",
                   cached_retriever(corpus, "dense", str(tiny_encoder), progress=False), window=(1, 30), negatives=2,
                   out=triples, progress=False)
    data = TrainingInput(triples, queries=synthetic_beir / "queries.jsonl", corpus=synthetic_beir / "corpus.jsonl",
                         group_by_query=True)
    runs = {c: train_cross_encoder(str(tiny_encoder), data, tmp_path / c, loss="bce", settings=settings(curriculum=c),
                                   progress=False) for c in ("none", "bm25")}
    assert_curriculum_changed_training(runs["none"], runs["bm25"], tmp_path / "none", tmp_path / "bm25")


def test_a_changed_curriculum_run_is_another_run(tmp_path):
    from rankwise.training.runner import run_identity
    from rankwise.training.settings import TrainSettings

    run = tmp_path / "bm25.trec"
    run.write_text("q Q0 d 1 1.0 bm25\n")
    settings = TrainSettings(curriculum="bm25", curriculum_run=str(run))
    before = run_identity(settings, {}, {})
    assert run_identity(settings, {}, {}) == before
    run.write_text("q Q0 d 1 2.0 bm25\nq Q0 e 2 1.0 bm25\n")
    assert run_identity(settings, {}, {}) != before
