"""Allowed values of options and reranker spec keys, declared once and checked at the edge.

A :class:`Range` (``int`` or ``float``, bounds inclusive or strict) and a choice (:func:`one_of`, a
``Literal`` built from the code's own tuple of names) serve both front ends:

* a ``rankwise`` option: ``k: Annotated[int, positive_int.option("-k", "--k", help=...)] = 100`` shows
  the range in ``--help`` and refuses ``-k 0`` while the command line is parsed, before any model loads
  or any file is touched (``rankwise: error: option '-k' / '--k': must be >= 1, got 0``, exit 2);
* a reranker spec key: ``positive_int.check("0", "batch_size")`` parses and checks ``batch_size=0``
  and raises the :class:`~rankwise.retrieval.errors.InputError` that names the key.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import typer

from rankwise.retrieval.errors import InputError


@dataclass(frozen=True)
class Range:
    """Numbers of one type within bounds: ``min``/``max`` inclusive, ``above``/``below`` strict."""

    type: type = int
    min: float | None = None
    max: float | None = None
    above: float | None = None
    below: float | None = None

    @property
    def text(self) -> str:
        """The range as ``--help`` shows it: ``x>=1``, ``0<x<1``, ``1<=x<=65535``."""
        low = f"{self.min:g}<=" if self.min is not None else f"{self.above:g}<" if self.above is not None else ""
        high = f"<={self.max:g}" if self.max is not None else f"<{self.below:g}" if self.below is not None else ""
        if not low and not high:
            return ""  # any finite number
        if low and not high:
            return "x" + (f">={self.min:g}" if self.min is not None else f">{self.above:g}")
        return f"{low}x{high}"

    def problem(self, value: int | float) -> str | None:
        """Why ``value`` is outside the range (None when it is inside)."""
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {value}"
        if ((self.min is not None and value < self.min) or (self.max is not None and value > self.max)
                or (self.above is not None and value <= self.above)
                or (self.below is not None and value >= self.below)):
            text = self.text
            wanted = f"{text[1:3].strip('0123456789.-')} {text.lstrip('x<>=')}" if text.startswith("x") \
                else f"within {text}"
            return f"must be {wanted}, got {value}"
        return None

    def parse(self, text: Any, name: str) -> int | float:
        """``text`` (a spec value) as a number of this range's type, or an InputError naming ``name``."""
        if isinstance(text, bool):
            raise InputError(f"{name}={text!r}: must be {'an integer' if self.type is int else 'a number'}",
                             field="reranker")
        if isinstance(text, self.type) or (self.type is float and isinstance(text, int)):
            return self.type(text)
        try:
            return self.type(str(text).strip())
        except ValueError:
            kind = "an integer" if self.type is int else "a number"
            raise InputError(f"{name}={text!r}: must be {kind}", field="reranker") from None

    def check(self, text: Any, name: str) -> int | float:
        """Parse and check one spec value: ``batch_size=0`` is ``field 'reranker': batch_size=0: must be >= 1``."""
        value = self.parse(text, name)
        problem = self.problem(value)
        if problem:
            raise InputError(f"{name}={text}: {problem}", field="reranker")
        return value

    def callback(self, value: Any) -> Any:
        """typer's check of an option value (None, an unset optional option, passes)."""
        if value is not None:
            problem = self.problem(value)
            if problem:
                raise typer.BadParameter(problem)
        return value

    def option(self, *param_decls: str, help: str = "", **kwargs: Any) -> Any:
        """A ``typer.Option`` checked against this range, the range shown in its help."""
        return typer.Option(*param_decls, help=f"{help} ({self.text})".strip() if self.text else help, callback=self.callback, **kwargs)


positive_int = Range(int, min=1)  # batch sizes, k, depth, chunk sizes, steps, counts
non_negative_int = Range(int, min=0)  # seeds, worker processes, "0: none" counts
positive_float = Range(float, above=0.0)  # learning rates, temperatures, scales
non_negative_float = Range(float, min=0.0)  # delays, timeouts
unit_interval = Range(float, min=0.0, max=1.0)  # ratios, weights, fractions
open_unit_interval = Range(float, above=0.0, below=1.0)  # significance levels
port = Range(int, min=1, max=65535)


def one_of(names: Sequence[str]) -> Any:
    """The ``Literal`` type of a tuple of names: as a typer annotation, ``--help`` lists the names and
    any other value is refused with them (``'annoy' is not one of 'flat', 'hnsw', ...``)."""
    return Literal[tuple(names)]  # type: ignore[valid-type]


def check_choice(value: Any, names: Sequence[str], name: str) -> str:
    """One spec value among ``names``, or an InputError naming the key."""
    if str(value) not in names:
        raise InputError(f"{name}={value}: must be one of {', '.join(names)}", field="reranker")
    return str(value)
