"""Describe a checkpoint: its step, files, parameter count, model and run config.

CHECKPOINT is a run folder (its newest checkpoint), a checkpoint folder or a .safetensors
file. --json prints everything as one JSON object (for scripts).
"""

from __future__ import annotations

import argparse
import json
import math

NAME = "info"
HELP = "show a checkpoint's step, model, parameter count, files and config"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="run folder, checkpoint folder or .safetensors file")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--config", action="store_true",
                        help="also print the full run config (TOML-like sections)")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def describe(path: str) -> dict:
    """The facts `vidiff info` prints, as a dict."""
    from safetensors import safe_open

    from vidiff.checkpoint import list_checkpoints, load_checkpoint

    ckpt = load_checkpoint(path)
    files = {k: {"path": str(p), "bytes": p.stat().st_size} for k, p in ckpt.files.items()}
    counts = {}
    for kind in ("model", "ema"):
        if kind in ckpt.files:
            with safe_open(str(ckpt.files[kind]), "pt") as f:  # header only, no tensor data
                counts[kind] = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    run = ckpt.path.parent.parent if ckpt.path.is_dir() else None
    others = [p.name for p in list_checkpoints(run)] if run is not None else []
    config = ckpt.config
    return {
        "path": str(ckpt.path),
        "step": ckpt.step,
        "parameters": counts.get("model", counts.get("ema")),
        "files": files,
        "total_bytes": sum(f["bytes"] for f in files.values()),
        "model": config.get("model"),
        "unet_config": ckpt.meta.get("unet_config"),
        "data": {k: ckpt.meta.get(k)
                 for k in ("channels", "frames", "size", "num_images", "fps")},
        "text_encoder": _text_encoder(config.get("data", {})),
        "num_classes": len(ckpt.meta.get("class_names") or []),
        "class_names": ckpt.meta.get("class_names") or [],
        "diffusion": config.get("diffusion"),
        "prior": config.get("prior"),
        "checkpoints_in_run": others,
        "config": config,
    }


def _text_encoder(data: dict) -> str | None:
    """The frozen text encoder of a text-conditional run (None: the model reads no text)."""
    if not data.get("use_captions"):
        return None
    name = data.get("text_encoder", "hash")
    width = f", width {data.get('text_dim')}" if name == "hash" else ""
    return f"{name}{width}, up to {data.get('max_tokens')} words"


def _model_line(model: dict, extra: str) -> str:
    """The "model" line: the U-Net preset, or VideoFusion's two generators; init_from."""
    line = f"model        preset {model.get('preset')!r}{extra}"
    if model.get("kind") == "videofusion":
        base = model.get("base_overrides") or {}
        base_extra = f" with {json.dumps(base)}" if base else ""
        line = (f"model        videofusion: residual generator preset {model.get('preset')!r}"
                f"{extra}, base generator preset {model.get('base_preset')!r}{base_extra} "
                f"(base_lr {model.get('base_lr')}"
                f"{', frozen' if model.get('freeze_base') else ''})")
    if model.get("init_from"):
        line += f"\n             initialized from the image model {model['init_from']}"
    return line


def run(args: argparse.Namespace) -> int:
    from vidiff.checkpoint import CheckpointError
    from vidiff.cli import CommandError

    try:
        facts = describe(args.checkpoint)
    except CheckpointError as err:
        raise CommandError(str(err)) from None
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    cfg = facts["config"]
    print(f"checkpoint   {facts['path']}")
    print(f"step         {facts['step']}")
    print(f"parameters   {facts['parameters']:,}" if facts["parameters"] else "parameters   ?")
    model = facts["model"] or {}
    overrides = model.get("overrides") or {}
    extra = f" with {json.dumps(overrides)}" if overrides else ""
    print(_model_line(model, extra))
    d = facts["data"]
    print(f"clips        {d['channels']} x {d['frames']} frames x {d['size']}x{d['size']}"
          + (f" (+{d['num_images']} images in training)" if d.get("num_images") else ""))
    diff = facts["diffusion"] or {}
    print(f"diffusion    {diff.get('schedule')} schedule, T={diff.get('timesteps')}, "
          f"predicts {diff.get('prediction')}")
    prior = facts["prior"] or {}
    print(f"prior        {prior.get('name')} {json.dumps(prior.get('params') or {})}")
    if d.get("fps"):
        print(f"frame rate   {d['fps']:g} fps")
    print(f"text         {facts['text_encoder'] or 'none (not text-conditional)'}")
    if facts["num_classes"]:
        names = facts["class_names"]
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        print(f"classes      {facts['num_classes']}: {shown}")
    data = cfg.get("data", {})
    source = data.get("source")
    if source == "folder":
        source = f"folder {data.get('path')}"
    print(f"trained on   {source}")
    print("files")
    for kind, f in facts["files"].items():
        print(f"  {kind:<7} {_size(f['bytes']):>10}  {f['path']}")
    print(f"  total   {_size(facts['total_bytes']):>10}")
    if len(facts["checkpoints_in_run"]) > 1:
        print(f"run has      {', '.join(facts['checkpoints_in_run'])}")
    if args.config:
        for section, values in cfg.items():
            print(f"[{section}]")
            for key, value in values.items():
                print(f"{key} = {json.dumps(value)}")
    return 0
