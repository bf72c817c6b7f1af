"""Help and logs: flags shown as flags, ``-k <int>``, defaults whole; third-party load reports only with -v."""

from __future__ import annotations

import logging

import pytest

from rankwise.cli import main


def _help(capsys, *args: str) -> str:
    try:
        main([*args, "--help"])
    except SystemExit as done:
        assert not done.code
    return capsys.readouterr().out


@pytest.mark.parametrize("command", [("search",), ("mine",), ("train", "cross-encoder"), ("beir",), ("rerank",)])
def test_help_shows_flags_as_flags_and_whole_defaults(capsys, command):
    out = _help(capsys, *command)
    assert "<bool>" not in out and "…" not in out
    assert "--help" in out and "Show this message and exit." in out


def test_k_shows_as_k(capsys):
    out = _help(capsys, "search")
    assert "--k" not in out
    k = [line for line in out.splitlines() if line.strip().startswith("-k")]
    assert len(k) == 1 and k[0].split()[:2] == ["-k", "<int>"] and "[default: 100]" in k[0]
    assert "(x>=1)" in k[0]


def test_long_defaults_are_not_cut(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    out = _help(capsys, "mine")
    assert "sentence-transformers/all-MiniLM-L6-v2]" in out  # wrapped whole onto a line of its own
    flags = [line for line in _help(capsys, "train", "cross-encoder").splitlines() if "--group-by-query" in line]
    assert flags and flags[0].split()[0] == "--group-by-query" and flags[0].split()[1] == "merge"


def test_library_warnings_are_quiet_unless_verbose(capsys, monkeypatch):
    import rankwise.cli as cli

    try:
        main(["--version"])
    except SystemExit as done:
        assert not done.code
    assert logging.getLogger("transformers").getEffectiveLevel() == logging.ERROR
    from transformers.utils import logging as hf_logging

    assert hf_logging.get_verbosity() == logging.ERROR
    cli._quiet_libraries(False)  # what -v does
    assert logging.getLogger("transformers").getEffectiveLevel() == logging.WARNING
    cli._quiet_libraries(True)
