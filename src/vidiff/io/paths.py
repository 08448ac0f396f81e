"""Checks before a folder is replaced or deleted: never a source, the run, or what holds them.

>>> check_apart("exported/a", {"RUN": "runs/a"}, "OUT")   # fine: apart
>>> check_apart("runs", {"RUN": "runs/a"}, "OUT")         # OutputPathError: contains RUN

Whatever replaces or deletes a folder (`vidiff export --force`, checkpoint rotation, a cache
rebuild) first checks that the folder is not one of the paths it reads or must keep, does
not contain one, and does not lie inside one: replacing it would lose them. Paths are
compared resolved (symbolic links and ``..`` followed).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from vidiff.io.write import OutputPathError, _probe_dir

__all__ = ["check_apart", "check_new_folder", "overlap"]

PathLike = str | os.PathLike


def _resolved(path: PathLike) -> Path:
    return Path(path).expanduser().resolve()


def overlap(target: PathLike, source: PathLike) -> str | None:
    """How `target` overlaps `source`: "is", "contains", "lies inside", or None (apart)."""
    a, b = _resolved(target), _resolved(source)
    if a == b:
        return "is"
    if a in b.parents:
        return "contains"
    if b in a.parents:
        return "lies inside"
    return None


def check_apart(target: PathLike, sources: Mapping[str, PathLike | None],
                what: str = "--out") -> None:
    """An `OutputPathError` naming `what` when the folder `target` is, contains or lies
    inside one of `sources` (name -> path; None entries are skipped): replacing or deleting
    `target` would lose that source."""
    for name, source in sources.items():
        if source is None:
            continue
        how = overlap(target, source)
        if how is not None:
            raise OutputPathError(
                f"{what} {str(target)!r} {how} {name} {str(source)!r}: replacing it would "
                f"delete {'it' if how != 'lies inside' else 'part of it'}; give a folder "
                f"outside {name}")


def check_new_folder(path: PathLike, what: str = "--out") -> Path:
    """Make sure the folder `path` can be created (or replaced) in its parent before any
    compute is spent: the parent is created if needed and must be a writable folder, and
    `path` itself must not be a file. An `OutputPathError` naming `what` and `path`."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{what} {str(path)!r} exists and is not a folder")
    parent = path.parent if str(path.parent) else Path(".")
    _probe_dir(parent, what, str(path))
    return path
