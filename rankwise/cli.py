"""The ``rankwise`` command: the commands each package defines, behind one front door.

The front door is also the one shell every command runs in (exit statuses in docs/exit-status.md):

* 0: done;
* 2: bad input or usage: a usage error (unknown command or option, a missing option) prints click's
  usage message; a bad option value or bad input (:class:`rankwise.retrieval.errors.InputError`, a file
  that cannot be read or written) prints one line ``rankwise: error: ...``; never a traceback;
* 130 (SIGINT, Ctrl-C) and 143 (SIGTERM): interrupted; one line says what was kept, and rerunning the
  same command resumes;
* 1: an internal error (a bug): one line, and the traceback only with ``RANKWISE_DEBUG=1``.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import signal
import sys
import traceback
from typing import Any, NoReturn

import typer

from rankwise.retrieval.errors import InputError

HELP = ("Neural retrieval and reranking: index, search, rerank, train, evaluate.\n\n"
        "Exit status: 0 done; 2 bad input or usage; 130 (Ctrl-C) or 143 (SIGTERM) interrupted: rerun the same "
        "command to resume; 1 an internal error (RANKWISE_DEBUG=1 shows its traceback).")
app = typer.Typer(name="rankwise", help=HELP, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)

DEBUG_ENV = "RANKWISE_DEBUG"
EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 2, 130, 143
# What an interrupted command leaves for its rerun, by command (the first word after ``rankwise``).
_RESUME = "; rerun the same command to resume"
_KEPT = {
    "index": "the finished chunks are kept in OUT's work folder" + _RESUME,
    "mine": "the finished query chunks are kept beside OUT" + _RESUME,
    "train": "the checkpoints saved so far are kept in OUT/checkpoints" + _RESUME,
    "beir": "the finished parts of the cached indexes are kept" + _RESUME,
    "position-bias": "the finished parts of the cached indexes are kept" + _RESUME,
    "followir": "the finished parts of the cached indexes are kept" + _RESUME,
    "screening": "the finished parts of the cached indexes are kept" + _RESUME,
    "serve": "the server answered the requests in flight and stopped",
}
# Option spellings renamed so that one name means one thing across commands; the old ones still work for one
# release (rewritten before parsing, with a one-line note on stderr). By command path: old flag -> new flag.
_ENCODER = {"--model": "--encoder"}
_PG_RANK = {"--samples": "--pg-samples", "--reward": "--pg-reward", "--temperature": "--pg-temperature",
            "--baseline": "--pg-baseline"}
RENAMED: dict[str, dict[str, str]] = {
    "index": _ENCODER, "search": _ENCODER, "beir": _ENCODER, "serve": _ENCODER,
    "followir": {**_ENCODER, "--k": "-k"}, "screening": {**_ENCODER, "--k": "-k"},
    "position-bias": {**_ENCODER, "--k": "-k"},
    "mine": {**_ENCODER, "--depth": "--rank-window"},
    "rerank": {"--model": "--reranker"},
    "train bi-encoder": _PG_RANK, "train cross-encoder": _PG_RANK,
    "train groupwise": {**_PG_RANK, "--depth": "--candidates"},
    "train listwise": {"--depth": "--candidates"}, "train idcm-selector": {"--depth": "--candidates"},
}
_NOTHING_KEPT = "no output was written under its final name" + _RESUME
# the OSError numbers that are a user's to fix (a path that does not exist, is a folder, is not writable...)
_USER_ERRNOS = {errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.EACCES, errno.EEXIST, errno.EPERM, errno.ENOTEMPTY,
                errno.ENAMETOOLONG, errno.EROFS}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is: every clean-up path of Ctrl-C runs for it too; the shell exits 143."""


_terminated = False


def _on_sigterm(signum: int, frame: Any) -> None:
    global _terminated
    _terminated = True
    raise Terminated()


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
    """The options of ``rankwise`` itself (the app's help is HELP)."""
    _quiet_libraries(not verbose)


_LIBRARIES = ("transformers", "sentence_transformers")


def _quiet_libraries(quiet: bool) -> None:
    """transformers' and sentence-transformers' warnings (load reports with terminal colour codes, notices) are
    errors-only unless ``-v`` (``TRANSFORMERS_VERBOSITY`` for a transformers not imported yet)."""
    level = logging.ERROR if quiet else logging.WARNING
    os.environ["TRANSFORMERS_VERBOSITY"] = "error" if quiet else "warning"
    for name in _LIBRARIES:
        logging.getLogger(name).setLevel(level)
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(level)


def _register() -> None:
    from rankwise.eval import cli as eval_cli
    from rankwise.rerank import cli as rerank_cli
    from rankwise.retrieval import cli as retrieval_cli
    from rankwise.training import cli as training_cli

    retrieval_cli.register(app)
    rerank_cli.register(app)
    training_cli.register(app)
    eval_cli.register(app)


@functools.cache
def _command() -> Any:
    """The click command of the app with every package's commands, built once per process (registering
    again would add each command a second time, and building it costs a fifth of a second)."""
    _register()
    return _plain_help(typer.main.get_command(app))


def _plain_help(command: Any) -> Any:
    """Help in click's plain layout for every command: flags shown as flags (no ``<bool>``), ``-k <int>``,
    help and defaults wrapped whole (never cut with an ellipsis) at the terminal's width, up to 120 columns."""
    from typer._click import _textwrap  # click's help wrapper (typer vendors click)

    if not getattr(_textwrap.TextWrapper, "whole_words", False):
        class WholeWords(_textwrap.TextWrapper):  # never split a model name or a flag at a hyphen
            whole_words = True

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **{**kwargs, "break_on_hyphens": False})

        _textwrap.TextWrapper = WholeWords
    command.context_settings.setdefault("max_content_width", 120)
    for sub in [command, *getattr(command, "commands", {}).values()]:
        if hasattr(sub, "rich_markup_mode"):
            sub.rich_markup_mode = None
        if sub is not command:
            _plain_help(sub)
    return command


def _command_name(argv: list[str]) -> str:
    return next((a for a in argv if not a.startswith("-")), "")


def renamed_options(command: Any, argv: list[str]) -> list[str]:
    """``argv`` with the old spellings of :data:`RENAMED` replaced by the new ones, one stderr line per old flag.

    The command path is read by walking ``command``'s groups (options before it, such as ``-v``, take no
    value); the flags after it are rewritten, ``--old VALUE`` and ``--old=VALUE`` alike, up to ``--``."""
    path: list[str] = []
    i = 0
    while i < len(argv) and getattr(command, "commands", None) is not None:
        if argv[i] in command.commands:
            path.append(argv[i])
            command = command.commands[argv[i]]
        elif not argv[i].startswith("-"):
            break
        i += 1
    renames = RENAMED.get(" ".join(path), {})
    if not renames:
        return argv
    out, noted = list(argv[:i]), set()
    for j, arg in enumerate(argv[i:], start=i):
        if arg == "--":
            return out + argv[j:]
        name, eq, value = arg.partition("=")
        if name in renames:
            if name not in noted:
                noted.add(name)
                print(f"rankwise: warning: {name} is deprecated in 'rankwise {' '.join(path)}': use {renames[name]} "
                      "(the old spelling goes in the next release)", file=sys.stderr)
            arg = renames[name] + (eq + value if eq else "")
            if renames[name] == "-k" and eq:  # -k takes no '=': -k VALUE
                out.extend(["-k", value])
                continue
        out.append(arg)
    return out


def _interrupted(argv: list[str]) -> NoReturn:
    """One line: which signal, what was kept, and that the same command resumes; exit 130 or 143."""
    name, code = ("SIGTERM", EXIT_SIGTERM) if _terminated else ("SIGINT", EXIT_SIGINT)
    kept = _KEPT.get(_command_name(argv), _NOTHING_KEPT)
    print(f"rankwise: interrupted ({name}): {kept}", file=sys.stderr)
    sys.exit(code)


def _option_error(err: Any) -> str:
    """A bad option value as one line naming the option: ``option '--k': Input should be ...``."""
    param = getattr(err, "param", None)
    message = str(err.message).removeprefix("Value error, ")
    if param is None:
        return message
    names = " / ".join(f"'{o}'" for o in (param.opts or [param.name]))
    kind = "argument" if getattr(param, "param_type_name", "") == "argument" else "option"
    return f"{kind} {names}: {message}"


def _fail(message: str, code: int) -> NoReturn:
    print(f"rankwise: error: {message}", file=sys.stderr)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``rankwise`` console script (exit statuses: see the module docstring)."""
    from typer._click import exceptions as click_errors  # typer 0.29 raises its own vendored click's classes

    global _terminated
    _terminated = False
    args = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' bars too, without importing it here
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("httpx", "httpx2", "faiss"):  # httpx2: the openai client's
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if int(os.environ.get("RANK", "0") or 0) > 0:  # under torchrun, rank 0's cost line speaks for the ranks
        logging.getLogger("rankwise.cost").setLevel(logging.WARNING)
    _quiet_libraries(True)
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        command = _command()
        status = command.main(args=renamed_options(command, args), prog_name="rankwise", standalone_mode=False)
    except InputError as err:
        _fail(str(err), EXIT_USAGE)
    except click_errors.MissingParameter as err:  # a missing option or argument: click's usage message
        err.show()
        sys.exit(EXIT_USAGE)
    except click_errors.BadParameter as err:  # a bad option value: one line naming the option
        _fail(_option_error(err), EXIT_USAGE)
    except typer.Exit as err:
        sys.exit(err.exit_code)
    except click_errors.ClickException as err:  # unknown command or option, missing option: click's usage message
        err.show()
        sys.exit(err.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        _interrupted(args)
    except OSError as err:
        if err.errno == errno.EPIPE:  # stdout closed by a pager or `head`
            sys.exit(EXIT_INTERNAL)
        what = f"{err.filename}: " if err.filename else ""
        _fail(f"{what}{err.strerror or err}", EXIT_USAGE if err.errno in _USER_ERRNOS else EXIT_INTERNAL)
    except MemoryError:
        _fail("out of memory (try a smaller --batch-size or --chunk-size)", EXIT_INTERNAL)
    except Exception as err:  # a bug: one line unless RANKWISE_DEBUG asks for the traceback
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            traceback.print_exc()
        else:
            print(f"rankwise: internal error: {type(err).__name__}: {err} (set {DEBUG_ENV}=1 to see the traceback)",
                  file=sys.stderr)
        sys.exit(EXIT_INTERNAL)
    finally:
        signal.signal(signal.SIGTERM, previous)
    # with standalone_mode=False, typer returns an Exit's status (130 for Ctrl-C) instead of raising it
    if status == EXIT_SIGINT:
        _interrupted(args)
    if isinstance(status, int) and status != EXIT_OK:
        sys.exit(status)
