"""The CLI reference (docs/cli.md), generated from the ``rankwise`` typer app.

``python -m rankwise.docs_cli`` rewrites docs/cli.md; ``python -m rankwise.docs_cli --check`` exits 1
when the file is not what the app generates now (tests/test_cli_reference.py runs the check). Each
command's section is its ``--help`` at a fixed width of 100 columns, so the page reads like the terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rankwise import cli

WIDTH = 100
DEFAULT_PATH = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
HEADER = """# CLI reference

Every `rankwise` command with its options, as `rankwise COMMAND --help` prints them. This page is
generated from the command-line app by `python -m rankwise.docs_cli` (a test checks that it is current);
edit the commands' help, not this page.

Exit statuses: [exit-status.md](exit-status.md).
"""


def root_command() -> Any:
    """The click command of the whole ``rankwise`` app, every package's commands registered, plain help layout."""
    return cli._command()


def walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """``(path, command)`` for ``command`` and every command and subcommand below it, groups before their
    commands, in the order they were registered."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from walk(sub, (*path, name))


def help_text(root: Any, path: tuple[str, ...]) -> str:
    """``rankwise PATH --help`` at :data:`WIDTH` columns."""
    ctx = root.context_class(root, info_name="rankwise", terminal_width=WIDTH, max_content_width=WIDTH)
    command = root
    for name in path:
        command = command.commands[name]
        ctx = command.context_class(command, parent=ctx, info_name=name, terminal_width=WIDTH,
                                    max_content_width=WIDTH)
    return command.get_help(ctx)


def renamed_table() -> str:
    """The old option spellings that still work for one release (``rankwise.cli.RENAMED``)."""
    rows = [f"| `rankwise {command}` | `{old}` | `{new}` |" for command, renames in cli.RENAMED.items()
            for old, new in renames.items()]
    return "\n".join(["| command | old spelling | use |", "|---|---|---|", *rows])


def generate() -> str:
    """The whole docs/cli.md text."""
    root = root_command()
    commands = list(walk(root))
    parts = [HEADER, "## Commands\n"]
    for path, _ in commands[1:]:
        anchor = "rankwise-" + "-".join(path)
        parts.append(f"{'  ' * (len(path) - 1)}- [`rankwise {' '.join(path)}`](#{anchor})")
    parts.append("\n## Renamed options\n\nThese spellings still work for one release, with a one-line note on "
                 "stderr:\n\n" + renamed_table() + "\n")
    for path, _ in commands:
        title = " ".join(("rankwise", *path))
        parts.append(f"## {title}\n\n```text\n{help_text(root, path).rstrip()}\n```\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Write docs/cli.md (or the path given), or with ``--check`` report whether it is current."""
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    paths = [a for a in args if a != "--check"]
    path = Path(paths[0]) if paths else DEFAULT_PATH
    text = generate()
    if check:
        current = path.is_file() and path.read_text(encoding="utf-8") == text
        if not current:
            print(f"{path} is not current: run python -m rankwise.docs_cli", file=sys.stderr)
        return 0 if current else 1
    from rankwise.retrieval.files import atomic_open

    with atomic_open(path) as fh:
        fh.write(text)
    print(f"{path}: {len(text.splitlines())} lines", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
