"""`StopSignals`: turn SIGINT and SIGTERM into "stop after this step".

SLURM, Kubernetes and torchrun send SIGTERM on preemption; Ctrl-C sends SIGINT. While a
`StopSignals` is active the first of either only sets `requested`: the trainer finishes the
step it is in, writes a checkpoint and returns. A second Ctrl-C (SIGINT) restores the previous
handlers and raises `KeyboardInterrupt` at once (the run lock is still released; nothing since
the last checkpoint is saved). A SIGTERM never does: launchers relay one request more than
once (`srun torchrun` signals each rank from Slurm and again from torchrun, and torchrun turns
a Ctrl-C into a SIGTERM to its ranks), and a scheduler that will not wait sends SIGKILL.
Under DDP and FSDP the trainer reduces `requested` over the ranks after every step, so every
rank stops after the same step.

Work that may be abandoned (a sample grid) runs inside `StopSignals.cutting()`: there the
first signal, or one that came before, raises `StopRequested` at once, so a stop never waits
for the grid; the trainer then writes its checkpoint and exits as for any stop.

Handlers can only be installed from the main thread; elsewhere (a trainer in a worker thread)
`StopSignals` does nothing and signals keep their usual effect.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

__all__ = ["StopRequested", "StopSignals", "ignore_stop_signals"]

_SIGNALS = tuple(s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None)) if s is not None)


class StopRequested(Exception):
    """A stop signal arrived during work run inside `StopSignals.cutting()`."""


class StopSignals:
    """A context manager: while inside, SIGINT/SIGTERM request a stop instead of killing."""

    def __init__(self, message: str = "", cut_message: str = ""):
        self.requested: int | None = None  # the first signal's number, once one arrived
        self.message = message  # printed (stderr) when the first signal arrives
        self.cut_message = cut_message or message  # printed instead inside `cutting()`
        self._previous: dict[int, object] = {}
        self._cutting = False

    def _handle(self, signum: int, frame) -> None:
        if self.requested is not None:
            if signum != signal.SIGINT:  # the same request relayed again: already stopping
                return
            self.restore()  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested = signum
        message = self.cut_message if self._cutting else self.message
        if message:
            print(f"\n{signal.Signals(signum).name}: {message}", file=sys.stderr, flush=True)
        if self._cutting:
            self._cutting = False
            raise StopRequested

    @contextlib.contextmanager
    def cutting(self) -> Iterator[None]:
        """Run the block as work a stop abandons: a signal inside it (or one that came
        before) raises `StopRequested` from wherever the block is."""
        if self.requested is not None:
            raise StopRequested
        self._cutting = True
        try:
            yield
        finally:
            self._cutting = False

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        """Put the previous handlers back."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __exit__(self, *exc) -> None:
        self.restore()


def ignore_stop_signals(_worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: workers ignore SIGINT and SIGTERM (Ctrl-C reaches the
    whole process group), so that the main process can finish its step and shut them down."""
    for sig in _SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
