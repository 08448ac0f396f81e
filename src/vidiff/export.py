"""Export a trained model to a self-contained folder (what `vidiff export` writes).

>>> export_model("runs/balls", "exported/balls")      # config.json, model.safetensors, README.md
>>> pipe = vidiff.Pipeline.from_pretrained("exported/balls")

The folder holds the model's `ModelSpec` as ``config.json`` with the machine path of a data
folder dropped, one set of weights as ``model.safetensors`` (the EMA weights unless told), a
model card ``README.md``, and, for a text-conditional model whose BERT encoder was given by
path, a copy of that encoder in ``text_encoder/``. It is written under a temporary name next
to its place and moved there when complete.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import replace
from pathlib import Path

from safetensors.torch import save_file

from vidiff.models.autoencoder import vae_folder
from vidiff.pipeline import EXPORT_CONFIG, EXPORT_WEIGHTS, read_pretrained
from vidiff.spec import SPEC_FORMAT, ModelSpec
from vidiff.text.clip import is_clip_root

__all__ = ["ExportError", "export_model", "model_card"]

PORTABLE_TEXT = ("hash", "minilm")  # text encoders known by name on any machine
BUNDLED_TEXT = "text_encoder"  # the subfolder of a copied BERT or CLIP encoder
BUNDLED_VAE = "vae"  # the subfolder of a latent model's copied autoencoder


class ExportError(ValueError):
    """An export that cannot be written as asked."""


def export_model(source: str | os.PathLike, out: str | os.PathLike,
                 weights: str = "ema") -> Path:
    """Write the model at `source` (a run, checkpoint or .safetensors file) to the folder
    `out` (replaced if it exists); returns `out`."""
    found = read_pretrained(source, weights)
    spec, text_dir = _portable(found.spec)
    out = Path(out)
    tmp = out.parent / f".{out.name}.tmp-{secrets.token_hex(4)}"
    tmp.mkdir(parents=True)
    try:
        tensors = {k: v.contiguous() for k, v in found.weights.items()}
        save_file(tensors, str(tmp / EXPORT_WEIGHTS), metadata={"format": SPEC_FORMAT})
        (tmp / EXPORT_CONFIG).write_text(spec.to_json())
        if text_dir is not None:
            _copy_text_encoder(text_dir, tmp / BUNDLED_TEXT)
        if found.spec.autoencoder is not None:  # the VAE folder (of a root: its vae/)
            shutil.copytree(vae_folder(Path(found.spec.autoencoder.name).expanduser()),
                            tmp / BUNDLED_VAE)
        reports = _eval_reports(found.source)
        (tmp / "README.md").write_text(model_card(spec, reports, weights, out.name))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _portable(spec: ModelSpec) -> tuple[ModelSpec, Path | None]:
    """The spec without machine paths, and the BERT folder to bundle (None: nothing)."""
    spec = replace(spec, provenance=replace(spec.provenance, data_path=None))
    if spec.autoencoder is not None:
        spec = replace(spec, autoencoder=replace(spec.autoencoder, name=BUNDLED_VAE))
    text = spec.conditioning.text_encoder
    if text is None or text.name in PORTABLE_TEXT:
        return spec, None
    folder = Path(text.name).expanduser()
    if not folder.is_dir():
        raise ExportError(f"the model's text encoder {text.name!r} is not a folder on this "
                          f"machine: it cannot be bundled into the export")
    bundled = replace(spec.conditioning, text_encoder=replace(text, name=BUNDLED_TEXT))
    return replace(spec, conditioning=bundled), folder


def _copy_text_encoder(folder: Path, target: Path) -> None:
    """A BERT folder as it is; of a Stable Diffusion root only text_encoder/ and tokenizer/."""
    if not is_clip_root(folder):
        shutil.copytree(folder, target)
        return
    for part in ("text_encoder", "tokenizer"):
        shutil.copytree(folder / part, target / part)


def _eval_reports(source: Path) -> list[dict]:
    """The `vidiff eval` reports (JSON with "metrics" and "settings") saved in the run folder
    of the checkpoint `source`, newest first."""
    run = source.parent.parent if source.is_dir() else source.parent
    reports = []
    for path in sorted(run.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and {"metrics", "settings"} <= set(data):
            reports.append({"file": path.name, **data})
    return reports


METRICS = [  # (report key path, name in the card)
    (("fvd",), "FVD"), (("fid",), "FID (per frame)"), (("fvd_lite",), "FVD-lite"),
    (("ball_tracking", "steady_pairs"), "steady frame pairs"),
    (("ball_tracking", "ref_steady_pairs"), "steady frame pairs of real clips"),
    (("ball_tracking", "score"), "ball tracking score"),
    (("nll", "bits_per_dim"), "NLL (bits/dim)"),
]


def _metric(metrics: dict, keys: tuple[str, ...]):
    value = metrics
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, (int, float)) else None


def _metrics_section(reports: list[dict]) -> list[str]:
    if not reports:
        return ["No `vidiff eval` report was saved in the run folder (`vidiff eval -c RUN "
                "--out RUN/eval.json` writes one; the next export includes it)."]
    lines = []
    for report in reports:
        ref = report["settings"].get("reference", {})
        gen = report["settings"].get("generated", {})
        lines += [f"From `{report['file']}`: {gen.get('sampler', '?')} "
                  f"{gen.get('steps') or ''} samples against "
                  f"{ref.get('name') or ref.get('path') or ref.get('kind', '?')}.", "",
                  "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {value:.4f} |" for keys, name in METRICS
                  if (value := _metric(report["metrics"], keys)) is not None]
        lines.append("")
    return lines


def _shape(spec: ModelSpec) -> str:
    s = spec.shape if spec.autoencoder is None else spec.autoencoder.pixel_shape
    text = f"{s.channels} x {s.frames} frames x {s.size}x{s.size}"
    if spec.autoencoder is not None:
        z = spec.shape
        text += f" (latents {z.channels} x {z.frames} x {z.size}x{z.size})"
    return text


def model_card(spec: ModelSpec, reports: list[dict], weights: str, name: str) -> str:
    """The README.md of an exported model."""
    p, c = spec.provenance, spec.conditioning
    kind = spec.model_kind.summary
    if c.class_names:
        cond = f"class-conditional ({len(c.class_names)} classes: {', '.join(c.class_names)})"
    elif c.text_encoder is not None:
        cond = f"text-conditional (text encoder {c.text_encoder.name})"
    else:
        cond = "unconditional"
    if c.lowres_size is not None:
        cond += f"; a super-resolution model from {c.lowres_size}x{c.lowres_size}"
    data = p.data + (f" {json.dumps(p.data_options)}" if p.data_options else "")
    sampling = spec.sampling
    lines = [
        f"# {name}", "",
        f"A vidiff video diffusion model: {kind}, {cond}.", "",
        "| | |", "|---|---|",
        f"| videos | {_shape(spec)}"
        + (f", {spec.preprocess.fps:g} fps" if spec.preprocess.fps else "") + " |",
        f"| trained on | {data or 'unknown'} (seed {p.data_seed})"
        + (f", {p.num_images} independent images per video" if p.num_images else "") + " |",
        f"| training steps | {p.step} ({weights} weights) |",
        f"| diffusion | {spec.diffusion.schedule} schedule, T = {spec.diffusion.timesteps}, "
        f"predicts {spec.diffusion.prediction} |",
        f"| noise prior | {spec.prior.name} {json.dumps(spec.prior.params)} |",
        f"| default sampling | {sampling.sampler}, {sampling.steps or 'default'} steps"
        + (f", guidance scale {sampling.guidance_scale:g}" if spec.conditional else "") + " |",
        "", "## Sample it", "",
        "```bash", f"vidiff sample {name} --out samples.mp4 --num 8 --seed 0", "```", "",
        "```python", "import torch, vidiff",
        f"pipe = vidiff.Pipeline.from_pretrained({name!r})",
        "videos = pipe(num_videos=8, generator=torch.Generator().manual_seed(0))  "
        "# (8, C, F, H, W) in [-1, 1]", "```", "",
        "## Measured", "", *_metrics_section(reports), "",
        "## Files", "",
        f"- `{EXPORT_CONFIG}`: the model spec (`vidiff.ModelSpec`, format {SPEC_FORMAT}).",
        f"- `{EXPORT_WEIGHTS}`: the weights (safetensors; no optimizer state, no pickle).",
    ]
    if spec.autoencoder is not None:
        lines.append(f"- `{BUNDLED_VAE}/`: the autoencoder (diffusers AutoencoderKL); the model "
                     f"works on its latents, the samples are decoded.")
    if c.text_encoder is not None and c.text_encoder.name == BUNDLED_TEXT:
        lines.append(f"- `{BUNDLED_TEXT}/`: the frozen text encoder (and its tokenizer).")
    return "\n".join(lines) + "\n"
