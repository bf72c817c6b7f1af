"""Every README block runs as written, in order, on small data: a ``scifact`` folder made of Cranfield
(30 of its queries: 15 for the train split, 15 for test) under ``$RANKWISE_DATA``, and tiny models under
``$RANKWISE_MODELS`` in place of all-MiniLM-L6-v2 and SmolLM2-135M-Instruct. ``bash`` and ``python``
blocks run; ``text`` blocks are synopses and sample output. Commands that install, download or run
the test suite itself are the only ones not run, and the test names them."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import require_shared

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
NOT_RUN = {  # command prefix -> why the test does not run it
    "pip install": "installs packages",
    "bash ../shared/assets/fetch-models.sh": "downloads the models (tiny ones stand in)",
    "python -m pytest": "the test suite itself",
}


def readme_blocks() -> list[tuple[str, str]]:
    return [(lang, code) for lang, code in BLOCK.findall(README.read_text(encoding="utf-8"))]


def test_every_block_says_its_language():
    langs = [lang for lang, _ in readme_blocks()]
    assert langs and all(lang in ("bash", "python", "text") for lang in langs), langs


def commands(block: str) -> list[str]:
    """The commands of a bash block: comments dropped, continued lines joined, ``&&`` chains split."""
    text = re.sub(r"\\\n\s*", " ", block)
    out = []
    for line in text.splitlines():
        line = line.split("  #")[0].strip()
        if line and not line.startswith("#"):
            out += [c.strip() for c in line.split(" && ")]
    return out


@pytest.fixture()
def readme_world(tmp_path, monkeypatch, tiny_encoder, tiny_causal_lm, tiny_cross_encoder):
    """``$RANKWISE_DATA/scifact`` (Cranfield, 30 queries) and ``$RANKWISE_MODELS`` (tiny models), cwd a scratch folder."""
    cranfield = require_shared("cranfield")
    data = tmp_path / "data" / "scifact"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").symlink_to(cranfield / "corpus.jsonl")
    lines = (cranfield / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], [line.split("\t") for line in lines[1:]]
    qids = list(dict.fromkeys(r[0] for r in rows))[:30]
    for split, keep in (("train", set(qids[:15])), ("test", set(qids[15:]))):
        (data / "qrels" / f"{split}.tsv").write_text(
            "\n".join([header] + ["\t".join(r) for r in rows if r[0] in keep]) + "\n", encoding="utf-8")
    queries = [q for q in (cranfield / "queries.jsonl").read_text(encoding="utf-8").splitlines()
               if json.loads(q)["_id"] in set(qids)]
    (data / "queries.jsonl").write_text("\n".join(queries) + "\n", encoding="utf-8")
    models = tmp_path / "models"
    models.mkdir()
    (models / "all-MiniLM-L6-v2").symlink_to(tiny_encoder)
    (models / "SmolLM2-135M-Instruct").symlink_to(tiny_causal_lm)
    (models / "ms-marco-MiniLM-L-6-v2").symlink_to(tiny_cross_encoder)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for key, value in {"RANKWISE_DATA": str(tmp_path / "data"), "RANKWISE_MODELS": str(models),
                       "HF_HUB_OFFLINE": "1", "RANKWISE_MEMORY_LIMIT": "8G"}.items():
        monkeypatch.setenv(key, value)
    return work


def _rankwise(command: str) -> None:
    from rankwise.cli import main

    args = shlex.split(os.path.expandvars(command))[1:]
    try:
        main(args)
    except SystemExit as done:
        assert not done.code, f"{command}: exit {done.code}"


def _curl(command: str, server: dict) -> dict:
    """The README's curl against the app ``rankwise serve --reranker cross-encoder:ce`` builds (ASGI, in process)."""
    import httpx

    from rankwise.rerank.server.app import create_app
    from rankwise.rerank.server.services import load_services

    words = shlex.split(command)
    url = next(w for w in words if w.startswith("http://"))
    headers = dict(words[i + 1].split(": ", 1) for i, w in enumerate(words) if w == "-H")
    body = words[words.index("-d") + 1]
    services = load_services(server["reranker"])
    try:
        async def ask() -> httpx.Response:
            transport = httpx.ASGITransport(app=create_app(services))
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080") as client:
                return await client.post(url.split("8080", 1)[1], content=body.encode(), headers=headers)

        response = asyncio.run(ask())
    finally:
        services.close()
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.slow  # the README's journeys, one after the other, on real data
def test_every_readme_block_runs_in_order(readme_world):
    blocks = readme_blocks()
    namespace: dict = {}
    skipped, ran = [], []
    served = re.search(r"With `rankwise serve --reranker (\S+)`", README.read_text(encoding="utf-8"))
    assert served, "the README names the server the curl block talks to"
    server = {"reranker": served.group(1)}
    for n, (lang, code) in enumerate(blocks):
        if lang == "python":
            exec(compile(code, f"README.md block {n}", "exec"), namespace)
            ran.append(f"python block {n}")
        elif lang == "bash":
            for command in commands(code):
                why = next((why for prefix, why in NOT_RUN.items() if command.startswith(prefix)), None)
                if why is not None:
                    skipped.append(command.split()[0])
                elif command.startswith("export "):
                    names = {a.split("=")[0] for a in shlex.split(command)[1:]}
                    assert names <= {"RANKWISE_DATA", "RANKWISE_MODELS", "HF_HUB_OFFLINE"}  # the fixture's
                elif command.startswith("rankwise "):
                    _rankwise(command)
                    ran.append(command)
                elif command.startswith("curl "):
                    answer = _curl(command, server)
                    assert answer["model"].startswith("cross-encoder:ce") and len(answer["results"]) == 2
                    assert {r["document"]["text"] for r in answer["results"]} == {
                        "The heart pumps blood through the body.", "Supersonic wings produce shock waves."}
                    ran.append("curl")
                else:
                    raise AssertionError(f"README command the test cannot run: {command}")
    assert sorted(set(skipped)) == ["bash", "pip", "python"]
    # what each journey left behind
    work = readme_world
    assert (work / "hybrid.trec").is_file() and len(namespace["run"]) == 15 and len(namespace["run2"]) == 15
    assert (work / "triples.tsv").stat().st_size > 0
    trained = json.loads((work / "ce" / "rankwise_training.json").read_text())
    assert trained["steps"] == 10
    assert list((work / "out").glob("*.png"))
    assert "curl" in ran and sum(c.startswith("rankwise ") for c in ran) == 4


def test_readme_pipeline_and_experiment_block_runs_alone(readme_world, capsys):
    """The BM25 >> cross-encoder pipeline and three-system Experiment, under ten lines, self-contained (run in a
    fresh namespace) on the Cranfield ``scifact`` folder with tiny models."""
    [block] = [code for lang, code in readme_blocks() if lang == "python" and "Experiment(" in code]
    assert len(block.strip().splitlines()) < 10
    namespace: dict = {}
    exec(compile(block, "README.md pipelines block", "exec"), namespace)
    result = namespace["result"]
    assert list(result.table.index) == ["bm25", "dense", "bm25+cross-encoder"]
    assert result.queries == 15 and result.systems["bm25+cross-encoder"].reused == ["bm25"]
    assert result.systems["bm25+cross-encoder"].stats["rerank"]["passages"] == 15 * 100
    assert "nDCG@10" in capsys.readouterr().out

