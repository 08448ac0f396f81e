"""The repository stands alone: its docs, benchmarks and tests cite only files it holds."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tracked() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / p for p in out.splitlines() if p.endswith((".md", ".py", ".toml", ".sh"))]


def test_no_citation_of_files_outside_the_repository():
    this = Path(__file__).resolve()
    bad = []
    for path in _tracked():
        if path.resolve() == this:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for pattern in (r"SPEC\.md", r"\bSPEC section", r"\.\./shared", r"seeds/",
                        r"RESULTS_PLACEHOLDER"):
            if re.search(pattern, text):
                bad.append(f"{path.relative_to(ROOT)}: {pattern}")
    assert not bad, bad


def test_cited_docs_exist():
    """Every docs/*.md or benchmarks/*.py path named in a markdown file is in the tree."""
    missing = []
    for path in _tracked():
        if path.suffix != ".md":
            continue
        for ref in re.findall(r"`((?:docs|benchmarks|configs|tests)/[\w./-]+\.(?:md|py|toml|sh))`",
                              path.read_text(encoding="utf-8")):
            if not (ROOT / ref).exists():
                missing.append(f"{path.relative_to(ROOT)} cites {ref}")
    assert not missing, missing
