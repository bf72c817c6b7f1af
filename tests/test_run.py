"""The Run type and TREC run files."""

from __future__ import annotations

import pytest

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.run import Run


def test_run_sorts_and_round_trips(tmp_path):
    run = Run({"q1": [("a", 0.5), ("b", 2.0), ("c", 1.0)], "q2": [("x", 0.123456789)]}, name="test")
    assert [d for d, _ in run["q1"]] == ["b", "c", "a"]
    path = tmp_path / "run.trec"
    run.write(path)
    lines = path.read_text().splitlines()
    assert lines[0] == "q1 Q0 b 1 2 test"
    back = Run.read(path)
    assert back.as_dict() == run.as_dict()
    assert back["q2"][0][1] == pytest.approx(0.123456789, rel=1e-8)
    assert back.name == "test"
    assert run.top(1)["q1"] == [("b", 2.0)]


def test_run_read_errors(tmp_path):
    path = tmp_path / "bad.trec"
    path.write_text("q1 Q0 d1 1 1.0 t\nq1 Q0 d2 2 abc t\n")
    with pytest.raises(InputError, match=r"bad.trec:2: field 'score'"):
        Run.read(path)
    path.write_text("q1 Q0 d1 1 1.0\n")
    with pytest.raises(InputError, match=r"bad.trec:1: expected 6 columns"):
        Run.read(path)
    path.write_text("q1 Q0 d1 1 1.0 t\nq1 Q0 d1 2 0.5 t\n")
    with pytest.raises(InputError, match="appears twice"):
        Run.read(path)


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "run.trec"
    Run({"q": [("d", 1.0)]}).write(path)

    class FailsHalfway(dict):
        def items(self):
            yield "q", [("e", 2.0)]
            raise RuntimeError("disk full")

    broken = Run()
    broken._results = FailsHalfway()
    with pytest.raises(RuntimeError):
        broken.write(path)
    assert Run.read(path)["q"] == [("d", 1.0)]  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["run.trec"]  # no temp file left
