"""The ``rankwise`` command: the commands each package defines, behind one front door.

Bad input (:class:`rankwise.retrieval.errors.InputError`) ends in one line on stderr and exit status 2.
"""

from __future__ import annotations

import logging
import os
import sys

import click
import typer

from rankwise.retrieval.errors import InputError

app = typer.Typer(name="rankwise", help="Neural retrieval and reranking: index, search, rerank, train, evaluate.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def _print_version(value: bool) -> None:
    if value:
        from rankwise import __version__

        typer.echo(f"rankwise {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit."),
             verbose: bool = typer.Option(False, "-v", "--verbose",
                                          help="Show third-party libraries' warnings (e.g. transformers' model load "
                                               "reports).")) -> None:
    """Neural retrieval and reranking: index, search, rerank, train, evaluate."""
    _quiet_libraries(not verbose)


_LIBRARIES = ("transformers", "sentence_transformers")


def _quiet_libraries(quiet: bool) -> None:
    """transformers' and sentence-transformers' warnings (load reports with terminal colour codes, notices) are
    errors-only unless ``-v``."""
    level = logging.ERROR if quiet else logging.WARNING
    for name in _LIBRARIES:
        logging.getLogger(name).setLevel(level)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(level)
    except ImportError:
        pass


def _register() -> None:
    from rankwise.eval import cli as eval_cli
    from rankwise.rerank import cli as rerank_cli
    from rankwise.retrieval import cli as retrieval_cli
    from rankwise.training import cli as training_cli

    retrieval_cli.register(app)
    rerank_cli.register(app)
    training_cli.register(app)
    eval_cli.register(app)


def _plain_help(command: click.Command) -> click.Command:
    """Help in click's plain layout for every command: flags shown as flags (no ``<bool>``), ``-k <int>``,
    help and defaults wrapped whole (never cut with an ellipsis) at the terminal's width, up to 120 columns."""
    command.context_settings.setdefault("max_content_width", 120)
    for sub in [command, *getattr(command, "commands", {}).values()]:
        if hasattr(sub, "rich_markup_mode"):
            sub.rich_markup_mode = None
        if sub is not command:
            _plain_help(sub)
    return command


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``rankwise`` console script."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("httpx", "faiss"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _quiet_libraries(True)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    _register()
    command = _plain_help(typer.main.get_command(app))
    try:
        command.main(args=argv, prog_name="rankwise", standalone_mode=False)
    except InputError as err:
        print(f"rankwise: error: {err}", file=sys.stderr)
        sys.exit(2)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        print("rankwise: interrupted", file=sys.stderr)
        sys.exit(130)
