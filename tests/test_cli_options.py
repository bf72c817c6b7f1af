"""One name per concept across the ``rankwise`` commands: one help text per option name, choices taken from the
code's own constants, the training settings declared once, old spellings working with a deprecation note,
and docs/cli.md generated from the app."""

from __future__ import annotations

import functools
import sys
import types
import typing
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from rankwise import cli, docs_cli
from rankwise.cli import RENAMED, main, renamed_options

ROOT = Path(__file__).resolve().parent.parent

# Option names whose help rightly differs by command, each with the reason; every other name has one help text.
EXCEPTIONS = {
    "--out": "what each command writes differs in kind (an index, a run, triples, a model, results), and its help "
             "says which",
    "--batch-size": "the batch of the command's own model: the encoder, the reranker or the trainer",
    "--loss": "each trainer has its own losses, listed in its help",
    "--backend": "whose backend (the encoder's, the reranker's, or export's onnx / onnx-int8 files) and its default "
                 "(torch, or the index's own) differ by command",
}


@functools.lru_cache(maxsize=1)
def _root() -> Any:
    return docs_cli.root_command()


def _options() -> dict[str, dict[str, list[str]]]:
    """option name -> help text -> the commands that show it."""
    helps: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path, command in docs_cli.walk(_root()):
        if getattr(command, "commands", None):
            continue
        for param in command.params:
            if param.param_type_name != "option":
                continue
            for name in [*param.opts, *param.secondary_opts]:
                helps[name][param.help or ""].append(" ".join(path))
    return helps


def test_every_command_is_walked():
    paths = {" ".join(p) for p, c in docs_cli.walk(_root()) if not getattr(c, "commands", None)}
    assert {"index", "search", "export", "rerank", "serve", "mine", "beir", "compare", "position-bias", "followir",
            "screening", "train bi-encoder", "train cross-encoder", "train listwise", "train groupwise",
            "train idcm-selector"} == paths


def test_one_help_text_per_option_name():
    helps = _options()
    several = {name: dict(texts) for name, texts in helps.items() if len(texts) > 1 and name not in EXCEPTIONS}
    assert not several, f"option names with several help texts (one meaning each, or a justified exception): {several}"


def test_the_exceptions_are_still_needed():
    helps = _options()
    assert [name for name in EXCEPTIONS if len(helps.get(name, {})) < 2] == []


@pytest.mark.parametrize(("command", "option", "constant"), [
    ("beir", "--retriever", "rankwise.retrieval.cached:KINDS"),
    ("mine", "--retriever", "rankwise.retrieval.cached:KINDS"),
    ("beir", "--fusion", "rankwise.retrieval.hybrid:FUSIONS"),
    ("beir", "--test", "rankwise.eval.compare:TESTS"),
    ("compare", "--correction", "rankwise.eval.compare:CORRECTIONS"),
    ("beir", "--format", "rankwise.eval.compare:FORMATS"),
    ("compare", "--format", "rankwise.eval.compare:FORMATS"),
    ("followir", "--backend", "rankwise.retrieval.backend.value:Backend.NAMES"),
    ("screening", "--backend", "rankwise.retrieval.backend.value:Backend.NAMES"),
    ("beir", "--missing-judged", "rankwise.retrieval.formats:MISSING_JUDGED"),
    ("train cross-encoder", "--curriculum", "rankwise.training.settings:CURRICULA"),
    ("train groupwise", "--pg-baseline", "rankwise.training.settings:PG_BASELINES"),
])
def test_choices_are_the_codes_own_constants(command, option, constant):
    import importlib

    module, name = constant.split(":")
    value = importlib.import_module(module)
    for part in name.split("."):
        value = getattr(value, part)
    node = _root()
    for word in command.split():
        node = node.commands[word]
    param = next(p for p in node.params if option in p.opts)
    literal = param.type_descriptor.annotation
    while typing.get_origin(literal) is not typing.Literal:  # Optional[Literal[...]]
        literal = next(a for a in typing.get_args(literal) if a is not type(None))
    assert typing.get_args(literal) == tuple(value)


def test_followir_help_lists_every_backend_it_accepts(capsys):
    try:
        main(["followir", "--help"])
    except SystemExit as done:
        assert not done.code
    out = capsys.readouterr().out
    from rankwise.retrieval.backend.value import Backend

    assert all(b in out for b in Backend.NAMES) and "torch or onnx" not in out


def test_renames_name_options_that_exist():
    root = _root()
    for command, renames in RENAMED.items():
        node = root
        for word in command.split():
            node = node.commands[word]
        names = {n for p in node.params for n in [*p.opts, *p.secondary_opts]}
        for old, new in renames.items():
            assert new in names and old not in names, (command, old, new)


@pytest.mark.parametrize(("argv", "expected"), [
    (["rerank", "r.trec", "--model", "cross-encoder:m"], ["rerank", "r.trec", "--reranker", "cross-encoder:m"]),
    (["-v", "rerank", "r.trec", "--model=cross-encoder:m"], ["-v", "rerank", "r.trec", "--reranker=cross-encoder:m"]),
    (["index", "c", "--model", "m", "--out", "o"], ["index", "c", "--encoder", "m", "--out", "o"]),
    (["mine", "--depth", "10:100"], ["mine", "--rank-window", "10:100"]),
    (["followir", "f", "--k=5"], ["followir", "f", "-k", "5"]),
    (["train", "listwise", "--depth", "5"], ["train", "listwise", "--candidates", "5"]),
    (["train", "groupwise", "--samples", "4", "--baseline", "none"],
     ["train", "groupwise", "--pg-samples", "4", "--pg-baseline", "none"]),
    (["train", "bi-encoder", "--model", "m"], ["train", "bi-encoder", "--model", "m"]),  # --model: starting model
    (["beir", "d", "--depth", "5"], ["beir", "d", "--depth", "5"]),  # --depth: rerank depth, unchanged
    (["rerank", "r", "--", "--model"], ["rerank", "r", "--", "--model"]),
])
def test_old_spellings_are_rewritten(capsys, argv, expected):
    assert renamed_options(_root(), argv) == expected
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if line]
    changed = {a.partition("=")[0] for a, b in zip(argv, expected) if a != b}
    assert len(notes) == len(changed)  # one line per old flag
    assert all(n.startswith("rankwise: warning: ") and "is deprecated" in n for n in notes)


def test_an_old_spelling_works_with_one_note(tmp_path, capsys):
    """The old flag reaches the new option: the error names --rank-window, after one deprecation line."""
    code = 0
    try:
        main(["mine", "--corpus", str(tmp_path), "--out", str(tmp_path / "t.tsv"), "--depth", "9:3"])
    except SystemExit as done:
        code = done.code
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 2
    assert err[0] == ("rankwise: warning: --depth is deprecated in 'rankwise mine': use --rank-window (the old "
                      "spelling goes in the next release)")
    assert err[1].startswith("rankwise: error: option '--rank-window': '9:3' is not a rank window")


def _captured(monkeypatch, module: str, function: str) -> dict[str, Any]:
    """What the command passes to ``module.function`` (a stand-in module: the trainer's imports are not needed)."""
    seen: dict[str, Any] = {}

    def fake(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setitem(sys.modules, module, types.SimpleNamespace(**{function: fake}))
    return seen


def test_training_settings_reach_the_trainer(tmp_path, monkeypatch):
    from rankwise.training.settings import PGRankSettings, TrainSettings

    triples = tmp_path / "t.tsv"
    triples.write_text("q\tp\tn\n", encoding="utf-8")
    seen = _captured(monkeypatch, "rankwise.training.cross_encoder", "train_cross_encoder")
    with pytest.raises(SystemExit):
        main(["train", "cross-encoder", "--model", "m", "--triples", str(triples), "--out", str(tmp_path / "o"),
              "--max-steps", "7", "--lr", "3e-5", "--gradient-accumulation", "2", "--curriculum", "bm25",
              "--curriculum-run", str(triples), "--max-tokens", "512", "--pg-samples", "5", "--pg-baseline", "none"])
    assert seen["settings"] == TrainSettings(max_steps=7, lr=3e-5, gradient_accumulation_steps=2, curriculum="bm25",
                                             curriculum_run=str(triples), max_tokens=512)
    assert seen["pg_rank"] == PGRankSettings(samples=5, baseline="none")


def test_llm_trainers_get_their_own_defaults(tmp_path, monkeypatch):
    from rankwise.training.settings import TrainSettings

    run = tmp_path / "run.trec"
    run.write_text("q 0 d 1 1.0 r\n", encoding="utf-8")
    import rankwise.training.cli as training_cli

    monkeypatch.setattr(training_cli, "_candidates", lambda **options: options["candidates"])  # per query
    seen: dict[str, Any] = {}

    def fake_train_llm(train: Any, model: str, source: Any, out: Path, settings: Any, *args: Any, **kw: Any) -> None:
        seen.update(settings=settings, candidates=source)

    monkeypatch.setattr(training_cli, "_train_llm", fake_train_llm)
    monkeypatch.setitem(sys.modules, "rankwise.training.listwise", types.SimpleNamespace(train_listwise=None))
    main_args = ["train", "listwise", "--model", "m", "--out", str(tmp_path / "o"), "--runs", str(run)]
    try:
        main([*main_args, "--candidates", "7"])
    except SystemExit as done:
        assert not done.code
    assert seen["settings"] == TrainSettings(batch_size=2, lr=1e-4, save_steps=50, logging_steps=5)
    assert seen["candidates"] == 7


def test_option_sets_refuse_unknown_fields():
    from rankwise.training.options import TRAIN_SETTINGS

    with pytest.raises(ValueError):
        TRAIN_SETTINGS.expand("settings", fields=("epochs",), lr=1.0)
    with pytest.raises(ValueError):
        TRAIN_SETTINGS.expand("settings", fields=("nonsense",))


def test_cli_reference_is_current():
    """docs/cli.md is what `python -m rankwise.docs_cli` generates from the app now."""
    assert (ROOT / "docs" / "cli.md").read_text(encoding="utf-8") == docs_cli.generate(), \
        "docs/cli.md is stale: run python -m rankwise.docs_cli"


def test_cli_reference_check_reports_a_stale_file(tmp_path, capsys):
    stale = tmp_path / "cli.md"
    stale.write_text("old\n", encoding="utf-8")
    assert docs_cli.main([str(stale), "--check"]) == 1
    assert docs_cli.main([str(stale)]) == 0 and docs_cli.main([str(stale), "--check"]) == 0
    assert "## rankwise train idcm-selector" in stale.read_text(encoding="utf-8")
    assert cli.HELP.splitlines()[0] in stale.read_text(encoding="utf-8")


def test_loss_help_lists_the_registered_losses():
    """--loss and --adore-metric stay free strings on the command line (their registry imports torch, too slow for
    --help) and are checked by the registry; their help must list exactly what it accepts."""
    from rankwise.training.losses.adore import METRICS
    from rankwise.training.losses.registry import BI_ENCODER, CROSS_ENCODER, losses_for

    root = _root()
    for command, kind in (("bi-encoder", BI_ENCODER), ("cross-encoder", CROSS_ENCODER)):
        params = {p.name: p for p in root.commands["train"].commands[command].params}
        listed = params["loss"].help.replace(" or ", ", ").split(", ")
        assert listed == list(losses_for(kind)), command
    adore = {p.name: p for p in root.commands["train"].commands["bi-encoder"].params}["adore_metric"]
    assert adore.help.endswith(" or ".join(METRICS) + " pair weights")


def test_commands_are_registered_once_however_often_main_runs(capsys):
    """Each ``main`` call used to add every command to the app again: the 60th call took seconds."""
    for _ in range(3):
        try:
            main(["search", "--help"])
        except SystemExit as done:
            assert not done.code
    names = [c.name for c in cli.app.registered_commands]
    assert names and len(names) == len(set(names))
