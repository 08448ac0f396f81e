"""Write a run as one self-contained HTML page: the loss curves (overall, by noise level,
held-out), every sample grid as a playable video, the config, the eval reports and the
machine. No network, no server: open the file in any browser.

Examples:
  vidiff report runs/balls --out report.html
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vidiff.cli import CommandError

NAME = "report"
HELP = "write a run's loss curves, samples and config as one HTML page"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="a run folder (vidiff train --out)")
    parser.add_argument("--out", default=None, metavar="FILE",
                        help="the HTML file (default: RUN/report.html)")


def run(args: argparse.Namespace) -> int:
    from vidiff.evaluate.report import build_report

    out = Path(args.out) if args.out else Path(args.run) / "report.html"
    if out.suffix.lower() not in (".html", ".htm"):
        raise CommandError(f"--out {str(out)!r}: the report is an .html file")
    try:
        page = build_report(args.run)
    except FileNotFoundError as err:
        raise CommandError(str(err)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    print(f"report: {out} ({len(page) / 2**20:.1f} MiB)")
    return 0
