"""Single-token passage identifiers (``[A]``, ``[B]``, ...) and the parsing of a ranking such as
``"[C] > [A] > [B]"`` back into a permutation, with RankGPT's repair (Sun et al., 2023): identifiers
are read in order, unknown and repeated ones are dropped, and the missing ones are appended in their
original order, so the result is always a permutation of ``range(n)``.
"""

from __future__ import annotations

import re
import string

from rankwise.retrieval.errors import InputError

LABELS: tuple[str, ...] = tuple(string.ascii_uppercase)

# "[C]", "[ C ]", or a trailing "[C" cut off by the token budget; "[Cell]" is not an identifier
_IDENTIFIER = re.compile(r"\[\s*([A-Z])(?![A-Za-z0-9])")


def labels(n: int) -> list[str]:
    """The first ``n`` identifiers; more than there are is an :class:`InputError`."""
    if n > len(LABELS):
        raise InputError(f"a window of {n} passages needs more than the {len(LABELS)} identifiers "
                         f"{LABELS[0]}..{LABELS[-1]}", field="window")
    return list(LABELS[:n])


def read_permutation(text: str, n: int) -> tuple[list[int], bool]:
    """``(permutation of range(n), whether it had to be repaired)`` for a ranking text."""
    known = {label: i for i, label in enumerate(labels(n))}
    order: list[int] = []
    seen: set[int] = set()
    repaired = False
    for match in _IDENTIFIER.finditer(text):
        i = known.get(match.group(1))
        if i is None or i in seen:  # unknown or repeated identifier
            repaired = True
            continue
        seen.add(i)
        order.append(i)
    missing = [i for i in range(n) if i not in seen]
    return order + missing, repaired or bool(missing)


def parse_permutation(text: str, n: int) -> list[int]:
    """The permutation of ``range(n)`` a ranking text names, best first, repaired as RankGPT does."""
    return read_permutation(text, n)[0]
