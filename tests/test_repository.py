"""The repository stands alone (its docs, benchmarks and tests cite only files it holds), and
its packages are layered as docs/DESIGN.md draws them."""

import ast
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


# docs/DESIGN.md, "Where each piece lives": each layer imports only the layers below it
_LAYERS = [{"utils"}, {"diffusion"}, {"sampling"}, {"kinds", "models"}, {"modelio"},
           {"train", "evaluate"}, {"commands"}]
_LEAVES = {"io", "data", "text", "metrics", "cond"}  # on utils alone; used by any layer


def _package_imports():
    """(importing package, imported package, file) for every `vidiff.*` import in src."""
    src = ROOT / "src" / "vidiff"
    for path in src.rglob("*.py"):
        parts = path.relative_to(src).parts
        me = parts[0] if len(parts) > 1 else path.stem
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vidiff."):
                yield me, node.module.split(".")[1], path


def test_the_packages_import_only_the_layers_below():
    rank = {pkg: i for i, layer in enumerate(_LAYERS) for pkg in layer}
    src = {p.name.removesuffix(".py") for p in (ROOT / "src" / "vidiff").iterdir()
           if not p.name.startswith(("_", "."))}
    assert src <= set(rank) | _LEAVES | {"cli"}, src - set(rank) - _LEAVES  # a new package
    upward = [f"{path.relative_to(ROOT)}: {me} imports {other}"
              for me, other, path in _package_imports()
              if me in rank and other in rank and rank[other] > rank[me]]
    assert not upward, upward
    leaves = [f"{path.relative_to(ROOT)}: {me} imports {other}"
              for me, other, path in _package_imports()
              if me in _LEAVES and rank.get(other, 0) > 0]  # leaves: utils and leaves only
    assert not leaves, leaves
