"""Loading transformers / diffusers models without their console noise.

Their `from_pretrained` prints progress bars per weight file and advice (install
`accelerate`) that a vidiff user can do nothing about; vidiff reports its own progress.
`quiet_loading()` silences both libraries' loggers (errors still show) and progress bars for
the duration of a load, and restores their settings afterwards.
"""

from __future__ import annotations

import contextlib
import importlib
import logging

__all__ = ["quiet_loading"]

_LIBRARIES = ("transformers", "diffusers")


@contextlib.contextmanager
def quiet_loading():
    """Context manager: the two libraries' warnings and progress bars off inside it."""
    restore = []
    for name in _LIBRARIES:
        try:
            utils = importlib.import_module(f"{name}.utils.logging")
        except ImportError:
            continue
        restore.append((utils, utils.get_verbosity(), utils.is_progress_bar_enabled()))
        utils.set_verbosity(logging.ERROR)
        utils.disable_progress_bar()
    try:
        yield
    finally:
        for utils, verbosity, bars in restore:
            utils.set_verbosity(verbosity)
            if bars:
                utils.enable_progress_bar()
