"""Finding the items of a dataset folder: the walk, labels from subfolders, caption files.

`scan_folder` walks a root (hidden files and folders skipped) for files of given suffixes and,
optionally, frame folders; `index_items` sorts what was found naturally ("v2" before "v10"),
labels each item by its immediate subfolder of the root and pairs it with its ``.txt`` caption.
Used by the video folders (`vidiff.data.folder`) and the image folders (`vidiff.data.images`).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from vidiff.io import IMAGE_SUFFIXES
from vidiff.io.read import natural_key

__all__ = ["Entry", "check_root", "index_items", "read_caption", "scan_folder"]


@dataclass(frozen=True)
class Entry:
    """One video (or image) found by the scan."""

    path: Path  # the file, or the frame folder
    rel: str  # path relative to the root, for messages
    label: int  # class index, -1 without one
    caption_file: Path | None  # the sidecar .txt, if there is one


def check_root(root: str | os.PathLike) -> Path:
    """``root`` as a Path; FileNotFoundError / NotADirectoryError naming it otherwise."""
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(errno.ENOENT, "no such dataset folder", str(root))
    if not root.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "the dataset root is not a folder", str(root))
    return root


def scan_folder(
    root: Path, file_suffixes: tuple[str, ...], frame_folders: bool
) -> list[tuple[Path, bool, set[str]]]:
    """Walk ``root``: (path, is_frame_folder, names in its folder) for each item found."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        names = {n for n in filenames if not n.startswith(".")}
        here = Path(dirpath)
        if frame_folders and any(Path(n).suffix.lower() in IMAGE_SUFFIXES for n in names):
            found.append((here, True, set()))
        for n in names:
            if Path(n).suffix.lower() in file_suffixes:
                found.append((here / n, False, names))
    return found


def index_items(
    root: Path,
    found: list[tuple[Path, bool, set[str]]],
    labels: str | None,
    captions: bool,
) -> tuple[list[Entry], list[str]]:
    """Sorted entries with labels (immediate subfolder of ``root``) and caption files."""
    if labels not in ("subfolders", None):
        raise ValueError(f'labels must be "subfolders" or None, got {labels!r}')
    items = []
    for path, is_folder, names in found:
        rel = path.relative_to(root)
        # a class folder is the first component of a path that goes deeper than root/<item>
        cls = rel.parts[0] if labels and len(rel.parts) > 1 else None
        caption = None
        if captions and rel.parts:
            if is_folder:  # frames in name/: the caption is name.txt next to it
                txt = path.parent / f"{path.name}.txt"
                exists = txt.is_file()
            else:  # name.mp4: name.txt in the same folder (its names are known from the scan)
                txt = path.with_suffix(".txt")
                exists = txt.name in names
            caption = txt if exists else None
        items.append((rel.as_posix() or ".", path, cls, caption))
    items.sort(key=lambda t: natural_key(t[0]))
    class_names = sorted({c for _, _, c, _ in items if c is not None}, key=natural_key)
    lookup = {c: i for i, c in enumerate(class_names)}
    entries = [
        Entry(path, rel, lookup[c] if c is not None else -1, cap) for rel, path, c, cap in items
    ]
    return entries, class_names


def read_caption(entry: Entry) -> str:
    """The entry's caption text ("" without a caption file or when it cannot be read)."""
    if entry.caption_file is None:
        return ""
    try:
        return entry.caption_file.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""
