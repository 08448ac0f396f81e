"""The `vidiff` command. Each subcommand lives in its own module under `vidiff.commands`.

A command module defines `NAME`, `HELP`, `add_arguments(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from vidiff import __version__

# module names under vidiff.commands, in --help order
COMMANDS = [
    "train", "distill", "sample", "info", "export", "demo", "extend", "interpolate", "upsample",
    "eval", "report",
]


class HelpFormatter(argparse.RawDescriptionHelpFormatter,
                    argparse.ArgumentDefaultsHelpFormatter):
    """Every subcommand's help: the module docstring's line breaks kept, defaults shown."""


class CommandError(Exception):
    """A user error: printed as `vidiff <cmd>: error: <message>` with exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="vidiff",
        description="Train, sample, extend and evaluate video diffusion models.",
    )
    parser.add_argument("--version", action="version", version=f"vidiff {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"vidiff.commands.{name}")
        cmd = sub.add_parser(module.NAME, help=module.HELP, description=module.__doc__,
                             formatter_class=HelpFormatter)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run, _parser=cmd)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line each, ``vidiff: warning: ...`` (not file:line plus source)."""
    print(f"vidiff: warning: {message}", file=file or sys.stderr)


def _stdout_closed() -> int:
    """`vidiff ... | head`: the reader went away. Exit quietly, as Unix tools do."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush succeeds
    except (OSError, ValueError):
        pass
    return 141  # 128 + SIGPIPE


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `vidiff` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    show, warnings.showwarning = warnings.showwarning, _show_warning
    try:
        code = int(args._run(args) or 0)
        sys.stdout.flush()
        return code
    except CommandError as err:
        args._parser.error(str(err))  # exits with code 2
    except BrokenPipeError:
        return _stdout_closed()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = show
    return 0


if __name__ == "__main__":
    sys.exit(main())
