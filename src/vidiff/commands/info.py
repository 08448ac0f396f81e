"""Describe a model: its step, files, parameter count, spec and run config.

CHECKPOINT is a run folder (its newest checkpoint), a checkpoint folder, a .safetensors file
or a folder written by `vidiff export`. What is printed comes from the model's spec
(`vidiff.ModelSpec`) and, for a checkpoint, its run config. --json prints everything as one
JSON object (for scripts).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from safetensors import safe_open

from vidiff.cli import CommandError
from vidiff.kinds import MODEL_KINDS
from vidiff.modelio.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
from vidiff.modelio.pretrained import EXPORT_CONFIG, EXPORT_WEIGHTS, is_exported, read_spec
from vidiff.modelio.sharded import count_parameters, shard_bytes
from vidiff.modelio.spec import ClipShape
from vidiff.modelio.video_pipeline import is_video_pipeline
from vidiff.text import is_clip_root
from vidiff.text.t5 import is_t5_root
from vidiff.utils.config_io import model_index_class

NAME = "info"
HELP = "show a checkpoint's step, model, parameter count, files and config"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="run folder, checkpoint folder, .safetensors file or "
                                           "exported model folder (vidiff export)")
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
    """The facts `vidiff info` prints, as a dict (no weights are read)."""
    if is_video_pipeline(path):
        raise CheckpointError(f"{path!r} is a diffusers {model_index_class(path)} root, not a "
                              f"vidiff model: `vidiff sample {path}` samples it, `vidiff train "
                              f"--init-from {path}` fine-tunes it")
    spec = read_spec(path)
    ckpt_meta: dict = {}
    if is_exported(Path(path)):
        where, config, others = Path(path), {}, []
        held = spec.provenance.weights or "weights"  # the one set it holds, as recorded
        found = {held: where / EXPORT_WEIGHTS, "config": where / EXPORT_CONFIG}
    else:
        ckpt = load_checkpoint(path)
        where, config, found = ckpt.path, ckpt.config, ckpt.files
        ckpt_meta = ckpt.meta
        run = ckpt.path.parent.parent if ckpt.path.is_dir() else None
        others = [p.name for p in list_checkpoints(run)] if run is not None else []
    files = {k: {"path": str(p), "bytes": shard_bytes(p) if p.is_dir() else p.stat().st_size}
             for k, p in found.items()}
    return {
        "path": str(where),
        "step": spec.provenance.step,
        "parameters": _count(found),
        "files": files,
        "total_bytes": sum(f["bytes"] for f in files.values()),
        "model": config.get("model") or {"kind": spec.kind},
        "spec": spec.to_dict(),
        "text_encoder": _text_encoder(spec),
        "network": _network(spec),
        "conditional": spec.conditional,
        "num_classes": spec.num_classes,
        "architecture_from": ckpt_meta.get("architecture_from"),
        "checkpoints_in_run": others,
        "config": config,
    }


def _count(files: dict) -> int | None:
    """The parameter count of the model (or EMA) weights, from the safetensors header (or
    the shards' metadata)."""

    if "shards" in files:  # an FSDP run's checkpoint
        return count_parameters(files["shards"])
    for kind in ("model", "ema", "weights"):
        if kind in files:
            with safe_open(str(files[kind]), "pt") as f:  # header only, no tensor data
                return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    return None


def _text_encoder(spec) -> str | None:
    """The frozen text encoder of a text-conditional model (None: the model reads no text)."""
    text = spec.conditioning.text_encoder
    if text is None:
        return None
    if is_t5_root(text.name):
        return f"{text.name} (the pipeline's T5, width {text.dim}, {text.max_tokens} tokens)"
    if is_clip_root(text.name) or getattr(spec.backbone_config, "null_text_tokens", 1) > 1:
        return f"{text.name} (CLIP, width {text.dim}, the tokenizer's padded length)"
    width = f", width {text.dim}" if text.name == "hash" else ""
    return f"{text.name}{width}, up to {text.max_tokens} words"


def _network(spec) -> str:
    """One line on the network (its kind's `describe`)."""
    return spec.model_kind.describe(spec.network)


def _clip(shape: dict) -> str:
    """A spec's clip shape (its `ClipShape` as a dict) as "C x F frames x HxW": height and
    width apart (`ClipShape.fhw`), so a bucketed run's non-square first bucket reads right."""
    clip = ClipShape(**shape)
    f, h, w = clip.fhw
    return f"{clip.channels} x {f} frames x {h}x{w}"


def _model_line(model: dict) -> str:
    """The "model" line: the run's ``[model]`` settings as its kind says them (an exported
    model has no run config: its kind only; the network is in the spec)."""
    if "preset" not in model:
        return f"model        {model['kind']} (the network config: vidiff info --json, spec)"
    return f"model        {MODEL_KINDS.get(model['kind']).describe_settings(model)}"


def run(args: argparse.Namespace) -> int:
    try:
        facts = describe(args.checkpoint)
    except CheckpointError as err:
        raise CommandError(str(err)) from None
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    cfg = facts["config"]
    print(f"{'checkpoint' if cfg else 'exported':<12} {facts['path']}")
    print(f"step         {facts['step']}")
    print(f"parameters   {facts['parameters']:,}" if facts["parameters"] else "parameters   ?")
    print(_model_line(facts["model"]))
    print(f"network      {facts['network']}")
    lora = facts["spec"].get("lora")
    if lora:
        scale = lora["rank"] if lora["alpha"] is None else lora["alpha"]
        print(f"lora         rank {lora['rank']}, alpha {scale:g}, on "
              f"{', '.join(lora['targets'])} (the rest frozen; vidiff export writes the "
              f"adapters, --merge the merged network)")
    spec = facts["spec"]
    shape, num_images = spec["shape"], spec["provenance"]["num_images"]
    print(f"clips        {_clip(shape)}"
          + (f" (+{num_images} images in training)" if num_images else ""))
    vae = spec.get("autoencoder")
    if vae:
        print(f"autoencoder  {vae['name']} (decodes to {_clip(vae['pixel_shape'])} pixels)")
    diff = spec["diffusion"]
    if diff.get("process") == "flow":
        print(f"diffusion    rectified flow, {diff['flow_time'].replace('_', '-')} training "
              f"times, shift {diff['flow_shift']:g}, predicts the velocity")
    else:
        print(f"diffusion    {diff['schedule']} schedule, T={diff['timesteps']}, "
              f"predicts {diff['prediction']}")
    prior = spec["prior"]
    print(f"prior        {prior['name']} {json.dumps(prior['params'])}")
    s = spec["sampling"]
    print(f"sampling     {s['sampler']} {s['steps'] or 'default'} steps"
          + (f", guidance scale {s['guidance_scale']:g}" if facts["conditional"] else ""))
    if spec["preprocess"]["fps"]:
        print(f"frame rate   {spec['preprocess']['fps']:g} fps")
    print(f"text         {facts['text_encoder'] or 'none (not text-conditional)'}")
    names = spec["conditioning"]["class_names"]
    if names:
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        taken = "" if facts["num_classes"] is not None else " (the data's; not a condition)"
        print(f"classes      {len(names)}: {shown}{taken}")
    source = spec["provenance"]["data"] or "?"
    if source == "folder":
        source = f"folder {spec['provenance']['data_path'] or '(path not recorded)'}"
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
