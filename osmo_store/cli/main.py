"""``osmo``: entry point, parser, and the one place errors become messages and exit codes."""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import os
import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from .. import __version__
from ..errors import OsmoError
from .common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, err, open_repo

DESCRIPTION = "osmo: a content-addressed store for LLM evaluation results."
EPILOG = (
    "The store is --store PATH, else $OSMO_STORE, else the user cache dir "
    "(~/.cache/osmo on Linux). The default store is created on first use; a --store PATH "
    "must be a store already (osmo init PATH), unless --create is given."
)


#: The top-level commands each command module registers, in the order ``osmo --help`` lists
#: them. A command module imports the library it needs (the store, the eval runner, the HTTP
#: client...), so only the module of the command being run is imported.
COMMAND_MODULES = {
    "evalcmd": ("eval",),  # the main job: listed first
    "plumbing": (
        "init", "hash-object", "cat-file", "ls-tree",
        "update-ref", "delete-ref", "show-ref", "reflog",
    ),
    "maintenance": ("fsck", "repack", "cache"),
    "cachecmd": ("log", "show"),
    "servecmd": ("serve",),
    "synccmd": ("remote", "push", "fetch", "pull", "clone"),
}  # fmt: skip


class Parser(argparse.ArgumentParser):
    """argparse with messages for people: a mistyped command gets "did you mean", a missing
    one says how to list them (Python 3.12's ``suggest_on_error`` is not there on 3.10-11),
    and usage reads ``COMMAND [ARGS]`` rather than argparse's ``COMMAND ...``."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        sub = next((a for a in self._actions if isinstance(a, argparse._SubParsersAction)), None)
        names = list(sub.choices) if sub is not None else []
        bad = re.match(r"argument (\S+): invalid choice: '([^']*)'", message)
        if bad and sub is not None and bad.group(1) in (sub.metavar, sub.dest):
            given = bad.group(2)
            close = _suggest(given, names)
            advice = f"did you mean {close!r}?" if close else f"{self.prog} --help lists them"
            message = f"{given!r} is not a command of {self.prog}: {advice}"
        elif names and "the following arguments are required: COMMAND" in message:
            message = f"give a command, such as {names[0]}: {self.prog} --help lists them"
        super().error(message)

    def format_usage(self) -> str:
        return super().format_usage().replace(" COMMAND ...", " COMMAND [ARGS]")

    def format_help(self) -> str:
        return super().format_help().replace(" COMMAND ...", " COMMAND [ARGS]")


def _suggest(given: str, names: Sequence[str]) -> str | None:
    """The command ``given`` was most likely meant to be: the same letters swapped
    (``sl`` for ``ls``), else the closest spelling."""
    import difflib  # here: only a mistyped command needs it, not every start

    for name in names:
        if sorted(name) == sorted(given):
            return name
    close = difflib.get_close_matches(given, names, n=1, cutoff=0.6)
    return close[0] if close else None


class _Peek(argparse.ArgumentParser):
    """Finds the command in a command line without knowing any command's arguments."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ValueError(message)


def _peek(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]] | None:
    """The global options and command of ``argv``, and what follows them; None when they do
    not parse (the full parser then reports the error)."""
    # It never prints help: a fixed width spares the terminal lookup (see _help_width).
    fixed = functools.partial(argparse.HelpFormatter, width=80)
    peek = _Peek(add_help=False, formatter_class=fixed)
    peek.add_argument("-h", "--help", action="store_true")
    peek.add_argument("--version", action="store_true")
    peek.add_argument("--store")
    peek.add_argument("--debug", action="store_true")
    peek.add_argument("--create", action="store_true")
    peek.add_argument("command", nargs="?")
    try:
        return peek.parse_known_args(argv)
    except ValueError:
        return None


def modules_for(argv: Sequence[str] | None) -> tuple[str, ...]:
    """The command modules that parsing ``argv`` needs: the named command's, none for a bare
    ``--version``, and all of them otherwise (help, or a usage error that lists commands)."""
    peeked = _peek(argv)
    if peeked is None:
        return tuple(COMMAND_MODULES)
    known, _ = peeked
    if not known.help:
        for module, commands in COMMAND_MODULES.items():
            if known.command in commands:
                return (module,)
        if known.command is None and known.version:
            return ()
    return tuple(COMMAND_MODULES)


def subcommand_for(argv: Sequence[str] | None) -> str | None:
    """The word right after the command in ``argv`` (``cache`` in ``osmo eval cache ls``),
    which lets a command build only that subcommand's parser; None when an option comes
    first or help is asked for, and the whole parser is needed."""
    peeked = _peek(argv)
    if peeked is None or peeked[0].help or not peeked[1] or peeked[1][0].startswith("-"):
        return None
    return peeked[1][0]


def _help_width() -> int:
    """The width argparse would give help: ``$COLUMNS``, else the terminal's, else 80, less
    2. Computed here once because argparse sizes a new formatter in every ``add_argument``
    (to check metavars) through ``shutil``, whose import (bz2, lzma) was 2 ms of every start."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return (columns or 80) - 2


def build_parser(
    width: int | None = None,
    modules: Sequence[str] = tuple(COMMAND_MODULES),
    subcommand: str | None = None,
) -> argparse.ArgumentParser:
    """The CLI with the commands of ``modules`` (default: all). ``width`` fixes the help
    width (the docs are generated at 88). ``subcommand`` (see subcommand_for) lets ``osmo
    eval`` build only the parser of the subcommand being run."""
    fmt = functools.partial(argparse.HelpFormatter, width=width or _help_width())

    class SizedParser(Parser):
        """Every parser of the CLI formats help at one width: subcommands' parsers, made by
        ``add_subparsers`` anywhere, are of their parent's class."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("formatter_class", fmt)
            super().__init__(*args, **kwargs)

    def sub_parsers(p: argparse.ArgumentParser, dest: str) -> argparse._SubParsersAction:
        return p.add_subparsers(dest=dest, metavar="COMMAND", required=True)

    parser = SizedParser(prog="osmo", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"osmo {__version__}")
    parser.add_argument("--store", metavar="PATH", help="store to use (overrides $OSMO_STORE)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument(
        "--create",
        action="store_true",
        help="create the --store PATH if it is not a store yet (else an error: a typo "
        "would start an empty store; $OSMO_CREATE=1 does the same)",
    )
    # Every command accepts --store and --debug after its name too. SUPPRESS keeps a
    # subcommand's unset option from overwriting the value given before the command.
    common = SizedParser(add_help=False)
    common.add_argument(
        "--store", metavar="PATH", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    common.add_argument(
        "--create", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )

    sub = sub_parsers(parser, "command")
    for name in COMMAND_MODULES:
        if name not in modules:
            continue
        module = importlib.import_module(f".{name}", __package__)
        if name == "maintenance":
            module.register(sub, common)
            cache = sub.add_parser(
                "cache", parents=[common], help="store-wide maintenance: gc, stats"
            )
            module.register_cache(sub_parsers(cache, "cache_command"), common)
        elif name == "cachecmd":
            module.register_history(sub, common)
        elif name == "evalcmd":
            module.register(sub, common, subcommand)
        else:
            module.register(sub, common)
    return parser


def _untranslated(message: str) -> str:
    return message


def _untranslated_plural(singular: str, plural: str, n: int) -> str:
    return singular if n == 1 else plural


@contextlib.contextmanager
def _argparse_in_english() -> Iterator[None]:
    """argparse looks each of its own phrases ("usage:", "show this help message and
    exit"...) up in the gettext catalogs of the user's language: ~30 filesystem searches and
    the ``locale`` module, 1.5 ms of every start. osmo's own messages are English, so
    argparse's are left in English too, while osmo parses its command line."""
    saved = argparse._, argparse.ngettext  # type: ignore[attr-defined]
    argparse._, argparse.ngettext = _untranslated, _untranslated_plural  # type: ignore[attr-defined]
    try:
        yield
    finally:
        argparse._, argparse.ngettext = saved  # type: ignore[attr-defined]


def main(argv: Sequence[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    with _argparse_in_english():
        parser = build_parser(modules=modules_for(given), subcommand=subcommand_for(given))
        args = parser.parse_args(argv)
    if args.debug:
        import logging  # here: a noticeable part of start-up, needed only with --debug

        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    try:
        if getattr(args, "needs_repo", True):
            with open_repo(args) as repo:
                return args.func(args, repo)
        return args.func(args, None)
    except KeyboardInterrupt:
        if args.debug:
            import traceback

            traceback.print_exc()
        err("osmo: interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError as e:
        if not _stdout_closed():  # some other pipe: an error like any other
            return report_error(e, debug=args.debug)
        # Output piped into `head` and closed: not an error. Point stdout at devnull so
        # the interpreter's final flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as e:  # noqa: BLE001 - the one place an error becomes what users see
        return report_error(e, debug=args.debug)


def report_error(e: Exception, *, debug: bool) -> int:
    """Tell the user about ``e``: the traceback only with ``--debug``, then always one line
    (``osmo: error: ...``) and, when there is one, a hint line. Returns the exit code."""
    if debug:
        import traceback

        traceback.print_exception(e)
    if isinstance(e, OsmoError):
        message, hint = str(e), e.hint
    elif isinstance(e, OSError):
        where = f": {e.filename}" if e.filename else ""
        message, hint = f"{e.strerror or e}{where}", None
    else:  # not raised on purpose: a bug, whose traceback is what a report needs
        message = f"internal error: {type(e).__name__}: {e}"
        hint = "this is a bug in osmo: run again with --debug to see where, and report it"
    lines = message.splitlines()
    err(f"osmo: error: {lines[0] if lines else type(e).__name__}")
    if hint:
        err(f"hint: {hint}")
    return EXIT_ERROR


def _stdout_closed() -> bool:
    """Whether stdout is a pipe or socket whose reader has gone (``osmo ... | head``)."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):  # replaced by a stream without a descriptor
        return False
    import select  # here: only a failed write asks

    if not hasattr(select, "poll"):
        return True
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))


if __name__ == "__main__":
    sys.exit(main())
