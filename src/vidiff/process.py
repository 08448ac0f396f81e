"""The noising process of a run: DDPM's Gaussian diffusion or rectified flow, from one config.

`build_process(config)` turns a `DiffusionConfig` into a `vidiff.Diffusion` (``process =
"ddpm"``) or a `vidiff.FlowMatching` (``"flow"``). Both offer what training and sampling use:
``sample_t`` (training times), ``q_sample`` (x_t from x0 and the prior's noise), ``target``
(the regression target), ``split`` (x0 and eps from a prediction) and ``network_time`` (what
the network is given as its timestep).
"""

from __future__ import annotations

from .diffusion import Diffusion, DiffusionConfig
from .flow import FlowMatching

__all__ = ["PROCESSES", "build_process", "is_flow"]

PROCESSES = ("ddpm", "flow")


def build_process(config: DiffusionConfig) -> Diffusion | FlowMatching:
    """The process of `config` (a ValueError names a bad field)."""
    if config.process == "flow":
        return FlowMatching(shift=config.flow_shift, time_sampling=config.flow_time)
    if config.process != "ddpm":
        raise ValueError(f"diffusion.process={config.process!r}: choose one of "
                         f"{', '.join(PROCESSES)}")
    return Diffusion.from_config(config)


def is_flow(process) -> bool:
    """Whether a built process is rectified flow."""
    return isinstance(process, FlowMatching)
