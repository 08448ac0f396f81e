"""`RunLock`: one trainer per run folder.

``<run>/.lock`` is held with an exclusive `fcntl.flock` for as long as the trainer lives. The
kernel drops the lock when its process ends, however it ends (``kill -9`` included), so a lock
left by a dead process is never in the way: the file stays, the lock does not. The file holds
the owner's pid, host and start time, for the message a second trainer gets. Where ``flock``
is not available (Windows, some network filesystems) the lock is the file itself, created
exclusively; a file naming a pid that no longer runs on this host is a stale lock and is
taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "RunLock", "RunLockedError"]

LOCK_FILE = ".lock"


class RunLockedError(RuntimeError):
    """Another live process trains in this run folder."""


def _owner() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S")}


def _describe(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"pid {info['pid']} on {info['host']}, since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """An exclusive lock on a run folder (a context manager; `release` is idempotent)."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None
        self._exclusive_file = False

    def acquire(self) -> RunLock:
        """Take the lock or raise `RunLockedError` naming its holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fcntl is not None and self._flock():
            return self
        if self._fd is None:
            self._create_exclusive()
        return self

    def _flock(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLockedError(self._busy_message()) from None
        except OSError:  # flock unsupported on this filesystem
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(_owner()).encode())
        self._fd = fd
        return True

    def _create_exclusive(self) -> None:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if not self._stale():
                    raise RunLockedError(self._busy_message()) from None
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                continue
            os.write(fd, json.dumps(_owner()).encode())
            self._fd, self._exclusive_file = fd, True
            return
        raise RunLockedError(self._busy_message())

    def _stale(self) -> bool:
        try:
            info = json.loads(self.path.read_text())
            return info["host"] == socket.gethostname() and not _alive(int(info["pid"]))
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def _busy_message(self) -> str:
        return (f"run folder {str(self.path.parent)!r} is in use by another vidiff train "
                f"({_describe(self.path)}); wait for it to finish, stop it, or pick another "
                f"--out")

    def release(self) -> None:
        """Drop the lock (the file stays unless it is the lock itself)."""
        if self._fd is None:
            return
        if self._exclusive_file:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
