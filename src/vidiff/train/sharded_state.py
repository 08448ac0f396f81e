"""An FSDP run's checkpoint state: every rank's shards out, and AdamW's state back in.

`write_shards` gives `vidiff.modelio.sharded.save_shards` the sharded state dicts of the
model, its EMA and the optimizer (`torch.distributed.checkpoint.state_dict`: by parameter
name, DTensors). On resume the weights come back whole (`Checkpoint.weights` gathers them)
before the network is sharded; the optimizer's state is loaded after, shard by shard:

- from shards (`load_optimizer_shards`): DCP reshards to this launch's ranks, any number of
  them, FSDP or not (one process, DDP);
- from a single-file checkpoint of a DDP or one-process run into an FSDP run
  (`load_full_optimizer`): the saved state, keyed by name, is sharded as it is set.

Either way the hyperparameters (lr, betas, weight decay, peak_lr) stay this run's config's,
as `vidiff.train.resume.load_optimizer_state` does for a DDP run.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vidiff.modelio.checkpoint import CheckpointError
from vidiff.modelio.sharded import SHARDS_DIR, load_shards, save_shards
from vidiff.train.resume import load_optimizer_state, optimizer_param_names
from vidiff.train.sharding import is_sharded

__all__ = ["load_full_optimizer", "load_optimizer_shards", "restore_optimizer", "write_shards"]


def write_shards(staged: Path, model: nn.Module, ema: nn.Module,
                 optimizer: torch.optim.Optimizer) -> None:
    """Every rank writes its shards into ``staged/shards`` (a collective)."""
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    state = {"model": get_model_state_dict(model), "ema": get_model_state_dict(ema),
             "optim": get_optimizer_state_dict(model, optimizer)}
    save_shards(staged / SHARDS_DIR, state)


def _keep_hyperparameters(optimizer: torch.optim.Optimizer, load) -> None:
    hyper = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    load()
    for group, h in zip(optimizer.param_groups, hyper, strict=True):
        group.update(h)


def load_optimizer_shards(checkpoint: Path, model: nn.Module,
                          optimizer: torch.optim.Optimizer) -> None:
    """AdamW's state from the shards of `checkpoint` (a collective under a process group):
    a `CheckpointError` when they do not fit this run's trained parameters."""
    from torch.distributed.checkpoint.state_dict import (
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )

    def load() -> None:
        state = {"optim": get_optimizer_state_dict(model, optimizer)}
        try:
            load_shards(checkpoint / SHARDS_DIR, state)
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(f"checkpoint {checkpoint}: its optimizer shards do not fit "
                                  f"this model ({str(err).splitlines()[0][:200]})") from None
        set_optimizer_state_dict(model, optimizer, state["optim"])

    _keep_hyperparameters(optimizer, load)


def load_full_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict,
                        names: list[list[str]]) -> None:
    """A single-file checkpoint's optimizer state (`saved`, ``optimizer.state_dict()`` of a
    run whose groups held the parameters `names`) into this run's sharded optimizer."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    order = [n for group in names for n in group]
    moments = {order[i]: s for i, s in saved.get("state", {}).items()
               if isinstance(i, int) and i < len(order)}
    groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": list(n)}
              for g, n in zip(saved["param_groups"], names, strict=True)]
    options = StateDictOptions(full_state_dict=True)
    _keep_hyperparameters(optimizer, lambda: set_optimizer_state_dict(
        model, optimizer, {"state": moments, "param_groups": groups}, options=options))


def restore_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module, checkpoint: Path,
                      state: dict, saved: list[list[str]] | None) -> str | None:
    """AdamW's moments from a checkpoint's `state` (its parameter names per group: `saved`):
    from an FSDP run's shards, into this run's shards, or as they were (by name where the
    trained set changed); a line to print when something did not carry over."""
    names = optimizer_param_names(optimizer, model)
    whole = "optimizer" in state  # a DDP or one-process checkpoint
    if (not whole or is_sharded(model)) and saved is not None and names != saved:
        return ("the trained parameters changed: the optimizer moments start fresh (a "
                "sharded run's moments are matched only to the same parameters)")
    if not whole:
        load_optimizer_shards(checkpoint, model, optimizer)
    elif is_sharded(model):
        load_full_optimizer(model, optimizer, state["optimizer"], saved or names)
    else:
        return load_optimizer_state(optimizer, state["optimizer"], checkpoint, names=names,
                                    saved=saved)
    return None
