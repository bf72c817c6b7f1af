"""Errors for bad user input: each names the file, the line and the field at fault."""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad input a user can fix. ``str()`` is one line: ``file:line: field: problem``.

    The command-line front door prints that line and exits with status 2 instead of a traceback.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path + (f":{self.line}" if self.line is not None else "") + ": "
        field = f"field '{self.field}': " if self.field else ""
        return f"{where}{field}{self.message}"
