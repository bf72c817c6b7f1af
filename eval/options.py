"""Command-line options of the evaluation commands, declared once (typer ``Annotated`` aliases).

``beir --systems`` and ``compare`` share the comparison options (baseline, paired test, correction,
significance, seed, output format, per-query CSV, plots); ``beir``, ``followir``, ``screening`` and
``position-bias`` share the systems, measures, qrels split and missing-judgement options. The choices are
``Literal`` types built from the code's own tuples (``rankwise.eval.choices.TESTS``...), so ``--help``
lists exactly what the code accepts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from rankwise.eval.choices import CORRECTIONS, FORMATS, TESTS
from rankwise.eval.metrics import DEFAULT_MEASURES
from rankwise.retrieval.formats import MISSING_JUDGED
from rankwise.retrieval.options import out_file, out_folder
from rankwise.retrieval.values import one_of, open_unit_interval

_SYSTEMS = typer.Option("--systems", help="systems to run and compare: FIRST[>>RERANKER],... e.g. "
                                          "bm25,dense,hybrid,bm25>>cross-encoder:MODEL (position-bias also takes "
                                          "dense-passages[:MODEL])")
Systems = Annotated[str, _SYSTEMS]
OptionalSystems = Annotated[Optional[str], _SYSTEMS]
Baseline = Annotated[Optional[str], typer.Option(help="the run or system the others are compared with (default: the "
                                                      "first)")]
Test = Annotated[one_of(TESTS), typer.Option(help="paired test: t (Student's paired t-test) or randomization "
                                                  "(Fisher)")]
Correction = Annotated[one_of(CORRECTIONS), typer.Option(help="multiple-comparison correction")]
Significance = Annotated[float, open_unit_interval.option(help="significance level of the markers")]
_FORMAT = typer.Option("--format", help="output format")
Format = Annotated[one_of(FORMATS), _FORMAT]


def format_option(names: Sequence[str]) -> Any:
    """``--format`` for a command that prints only some of :data:`FORMATS`."""
    return Annotated[one_of(names), _FORMAT]


PerQuery = Annotated[Optional[Path], out_file("write per-query values to this CSV", "--per-query")]
_PLOT_HELP = ("write plots: into this folder per-query-delta.png and quality-cost.png (position-bias: this PNG file, "
              "nDCG@10 by position)")
PlotFolder = Annotated[Optional[Path], out_folder(_PLOT_HELP, "--plot")]
PlotFile = Annotated[Optional[Path], out_file(_PLOT_HELP, "--plot")]
_MEASURES = typer.Option("--measures", help="comma-separated ir-measures names (screening: its own measures too) "
                                            "(default: the dataset's official ones, else "
                                            f"{','.join(DEFAULT_MEASURES)})")
Measures = Annotated[str, _MEASURES]
OptionalMeasures = Annotated[Optional[str], _MEASURES]
Split = Annotated[str, typer.Option(help="qrels split of the dataset")]
SelfHits = Annotated[Optional[bool], typer.Option(
    "--drop-self-hits/--keep-self-hits",
    help="drop a retrieved document whose id equals the query id before scoring (default: drop for BEIR datasets, "
         "as BEIR does; keep for a qrels file and other datasets)")]
MissingJudged = Annotated[one_of(MISSING_JUDGED), typer.Option(
    "--missing-judged", help="a judgement naming a document that is not in the corpus: warn (count them in one "
    "warning and go on; some collections judge documents their corpus lacks) or error (refuse the file, naming its "
    "line and the id)")]
