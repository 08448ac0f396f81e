"""The `vidiff` command. Each subcommand lives in its own module under `vidiff.commands`.

A command module defines `NAME`, `HELP`, `add_arguments(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# module names under vidiff.commands, in --help order
COMMANDS = ["train", "sample", "info", "demo", "extend", "interpolate", "upsample", "eval"]


class HelpFormatter(argparse.RawDescriptionHelpFormatter,
                    argparse.ArgumentDefaultsHelpFormatter):
    """Every subcommand's help: the module docstring's line breaks kept, defaults shown."""


class CommandError(Exception):
    """A user error: printed as `vidiff <cmd>: error: <message>` with exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    from vidiff import __version__

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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `vidiff` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except CommandError as err:
        args._parser.error(str(err))  # exits with code 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
