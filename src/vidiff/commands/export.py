"""Export a trained model to a folder anyone can load: the spec, the weights and a model card.

RUN is a run folder (its newest checkpoint), a checkpoint folder or a .safetensors file. OUT
gets

- ``config.json``: the model's `vidiff.ModelSpec` (no machine paths);
- ``model.safetensors``: the EMA weights (``--weights model``: the raw ones), nothing else:
  no optimizer state, no pickle;
- ``README.md``: a model card (what it is, its data, steps, prior, sampler, the metrics of
  the run's ``vidiff eval`` reports, the command to sample it);
- ``text_encoder/``: a text-conditional model's BERT folder, when it was given by path (of
  a pipeline root: its text_encoder/ and tokenizer/);
- ``vae/``: a latent model's autoencoder;
- ``pytorch_lora_weights.safetensors``: a LoRA run of a Wan / LTX-Video / CogVideoX model,
  its adapters in diffusers' format (``WanPipeline.load_lora_weights(OUT)``); ``--merge``
  folds them into the weights instead and writes the plain network.

OUT is refused when it is, contains or lies inside RUN (``--force`` would delete the run).
``config.json`` records which weights OUT holds; `vidiff sample` and `vidiff info` say so.

``vidiff.Pipeline.from_pretrained(OUT)`` and every command that takes a checkpoint load it,
and sample exactly the videos the run gives with the same seed.

  vidiff export runs/balls exported/balls
  vidiff sample exported/balls --out balls.gif
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vidiff.cli import CommandError
from vidiff.modelio.checkpoint import CheckpointError
from vidiff.modelio.export import ExportError, export_model

NAME = "export"
HELP = "export a run's model to a shareable folder (config.json, model.safetensors, card)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="run folder, checkpoint folder or .safetensors file")
    parser.add_argument("out", help="the folder to write (must not exist or be empty; never "
                                    "the run, a folder holding it or one inside it)")
    parser.add_argument("--weights", choices=("ema", "model"), default=None,
                        help="which weights: the EMA (what sampling uses; the default) or the "
                             "raw ones")
    parser.add_argument("--merge", action="store_true",
                        help="a LoRA run: fold the adapters into the weights and write the plain "
                             "network (default: the adapters, also in diffusers' LoRA format)")
    parser.add_argument("--force", action="store_true",
                        help="replace a non-empty OUT (not the run or a folder around it)")


def run(args: argparse.Namespace) -> int:

    try:
        written = export_model(args.checkpoint, Path(args.out), weights=args.weights,
                               force=args.force, merge=args.merge)
    except (CheckpointError, ExportError, OSError) as err:
        raise CommandError(str(err)) from None
    total = sum(p.stat().st_size for p in written.rglob("*") if p.is_file())
    names = ", ".join(sorted(p.name for p in written.iterdir()))
    print(f"wrote {written} ({names}; {total / 2**20:.1f} MiB); sample it with: "
          f"vidiff sample {written} --out samples.mp4")
    return 0

