"""Rendering results: a table for people, one JSON object for programs."""

from __future__ import annotations

from rich.table import Table

from rankwise.retrieval.json_output import dumps


def metrics_table(rows: dict[str, dict[str, float]], title: str | None = None) -> Table:
    """A rich table, one row per ``rows`` key (dataset or system), one column per measure."""
    measures: list[str] = []
    for values in rows.values():
        measures += [m for m in values if m not in measures]
    table = Table(title=title)
    table.add_column("")
    for m in measures:
        table.add_column(m, justify="right")
    for name, values in rows.items():
        table.add_row(name, *(f"{values[m]:.4f}" if m in values else "-" for m in measures))
    return table


def metrics_json(rows: dict[str, dict[str, float]]) -> str:
    """``{"<row>": {"<measure>": value, ...}, ...}`` as one line of JSON (:mod:`rankwise.retrieval.json_output`'s digits)."""
    return dumps(rows, sort_keys=False)
