"""Export a trained model to a self-contained folder (what `vidiff export` writes).

>>> export_model("runs/balls", "exported/balls")      # config.json, model.safetensors, README.md
>>> pipe = vidiff.Pipeline.from_pretrained("exported/balls")

The folder holds the model's `ModelSpec` as ``config.json`` with the machine path of a data
folder dropped, one set of weights as ``model.safetensors`` (the EMA weights unless told), a
model card ``README.md``, and, for a text-conditional model whose BERT encoder was given by
path, a copy of that encoder in ``text_encoder/``. It is written under a temporary name next
to its place and moved there when complete; an OUT that is, contains or lies inside the run
it reads is refused (`vidiff.io.check_apart`).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import replace
from pathlib import Path

from safetensors.torch import save_file
from torch import nn

from vidiff.io.paths import check_apart, check_new_folder
from vidiff.io.write import OutputPathError
from vidiff.modelio.checkpoint import CHECKPOINTS_DIR, find_checkpoint, load_weights
from vidiff.modelio.pretrained import (
    EXPORT_CONFIG,
    EXPORT_WEIGHTS,
    Pretrained,
    is_exported,
    read_pretrained,
    read_spec,
)
from vidiff.modelio.spec import SPEC_FORMAT, ModelSpec
from vidiff.models.autoencoder import vae_folder
from vidiff.models.lora import merge_lora
from vidiff.text.clip import is_clip_root
from vidiff.text.t5 import is_t5_root

__all__ = ["ExportError", "export_model", "model_card"]

PORTABLE_TEXT = ("hash", "minilm")  # text encoders known by name on any machine
BUNDLED_TEXT = "text_encoder"  # the subfolder of a copied BERT or CLIP encoder
BUNDLED_VAE = "vae"  # the subfolder of a latent model's copied autoencoder


class ExportError(ValueError):
    """An export that cannot be written as asked."""


def export_model(source: str | os.PathLike, out: str | os.PathLike,
                 weights: str | None = None, *, force: bool = True,
                 merge: bool = False) -> Path:
    """Write the model at `source` (a run, checkpoint, .safetensors file or exported folder)
    to the folder `out` with its "ema" or "model" `weights` (None: the EMA ones, or the only
    set `source` holds; see `vidiff.modelio.pipeline.read_pretrained`); returns `out`. An
    `out` that holds files is replaced with `force` (else refused), and only once the new folder is
    complete. Before anything is read or written, an `ExportError` refuses an `out` that
    cannot be written or that is, contains or lies inside what the export reads (the
    source, its run folder, a text encoder or autoencoder folder to bundle).

    A LoRA model (its spec's ``lora``) is written with its adapters, and for a kind with a
    diffusers pipeline also as diffusers' LoRA file (`LORA_WEIGHTS`, what that pipeline's
    ``load_lora_weights(out)`` reads); with `merge` the adapters are folded into the weights
    and the export is the plain network."""
    out = Path(out)
    sources = _sources(Path(source), read_spec(source))
    try:
        check_new_folder(out, "OUT")
        check_apart(out, sources, "OUT")
    except OutputPathError as err:
        raise ExportError(str(err)) from None
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExportError(f"OUT {str(out)!r} is not empty; pick a new folder or pass --force")
    found = read_pretrained(source, weights)
    if merge and found.spec.lora is None:
        raise ExportError("--merge: the model holds no LoRA adapters (train.lora)")
    spec, text_dir = _portable(found.spec)
    network = _network(found) if found.spec.lora is not None else None
    if merge:
        merge_lora(network)
        spec = replace(spec, lora=None)
        found = replace(found, weights=network.state_dict(), spec=replace(found.spec, lora=None))
    try:
        _write(found, spec, text_dir, out, None if merge else network)
    except OSError as err:
        where = f" ({err.filename})" if err.filename else ""
        raise ExportError(f"cannot write the export OUT {str(out)!r}: "
                          f"{err.strerror or err}{where}") from None
    return out


def _sources(source: Path, spec: ModelSpec) -> dict[str, Path | None]:
    """What an export of `source` reads, by name: the source, its run folder and the folders
    it bundles (an `out` overlapping one of them would lose it)."""
    found = {"the source": source}
    if not is_exported(source):
        checkpoint = find_checkpoint(source).resolve()
        found["its run folder"] = next((p.parent for p in checkpoint.parents
                                        if p.name == CHECKPOINTS_DIR), None)
        text = spec.conditioning.text_encoder
        if text is not None and text.name not in PORTABLE_TEXT:
            found["its text encoder"] = Path(text.name).expanduser()
        if spec.autoencoder is not None:
            found["its autoencoder"] = Path(spec.autoencoder.name).expanduser()
    return found


def _network(found: Pretrained) -> nn.Module:
    """The network of `found` with its weights (a LoRA model: its adapters included)."""
    network = found.spec.build_network()
    load_weights(network, found.weights, str(found.source))
    return network


def _write(found: Pretrained, spec: ModelSpec, text_dir: Path | None, out: Path,
           lora: nn.Module | None = None) -> None:
    """The export's files in a temporary folder next to `out`, then moved onto `out` (an
    old `out` is moved aside first and deleted last); `lora`: a LoRA network, whose
    adapters its kind also writes in diffusers' format."""

    tmp = out.parent / f".{out.name}.tmp-{secrets.token_hex(4)}"
    old = out.parent / f".{out.name}.old-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        tensors = {k: v.contiguous() for k, v in found.weights.items()}
        save_file(tensors, str(tmp / EXPORT_WEIGHTS), metadata={"format": SPEC_FORMAT})
        (tmp / EXPORT_CONFIG).write_text(spec.to_json())
        if lora is not None:
            spec.model_kind.write_diffusers_lora(lora, spec.lora, tmp)
        if text_dir is not None:
            _copy_text_encoder(text_dir, tmp / BUNDLED_TEXT)
        if found.spec.autoencoder is not None:  # the VAE folder (of a root: its vae/)
            shutil.copytree(vae_folder(Path(found.spec.autoencoder.name).expanduser()),
                            tmp / BUNDLED_VAE)
        reports = _eval_reports(found.source)
        (tmp / "README.md").write_text(model_card(spec, reports, out.name))
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
    finally:
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)


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
    """A BERT folder as it is; of a Stable Diffusion or video pipeline root only
    text_encoder/ and tokenizer/ (and a video root's model_index.json, its family)."""
    if is_t5_root(folder):  # a video pipeline root: its T5, tokenizer and model_index.json
        target.mkdir()
        shutil.copy2(folder / "model_index.json", target / "model_index.json")
    elif not is_clip_root(folder):
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
    """The card's clip line: C x F frames x HxW (a bucketed run's first bucket: height and
    width as the spec's `ClipShape.fhw` gives them), a latent model's latents too."""
    s = spec.shape if spec.autoencoder is None else spec.autoencoder.pixel_shape
    f, h, w = s.fhw
    text = f"{s.channels} x {f} frames x {h}x{w}"
    if spec.autoencoder is not None:
        z = spec.shape
        zf, zh, zw = z.fhw
        text += f" (latents {z.channels} x {zf} x {zh}x{zw})"
    return text


def _conditioning(spec: ModelSpec) -> str:
    """What the network is conditioned on: its classes (the U-Net's class count), its text
    encoder, a low-res clip; class names of the data that are no condition are left out."""
    c, parts = spec.conditioning, []
    if spec.num_classes is not None:
        names = f": {', '.join(c.class_names)}" if c.class_names else ""
        parts.append(f"class-conditional ({spec.num_classes} classes{names})")
    if c.text_encoder is not None:
        parts.append(f"text-conditional (text encoder {c.text_encoder.name})")
    text = " and ".join(parts) or "unconditional"
    if c.lowres_size is not None:
        text += f"; a super-resolution model from {c.lowres_size}x{c.lowres_size}"
    return text


def _process(spec: ModelSpec) -> tuple[str, str]:
    """The card's row on the noising process: (name, facts) of DDPM or rectified flow."""
    d = spec.diffusion
    if d.process == "flow":
        return ("process", f"rectified flow, {d.flow_time.replace('_', '-')} training times, "
                           f"shift {d.flow_shift:g}, predicts the velocity")
    return ("diffusion", f"{d.schedule} schedule, T = {d.timesteps}, predicts {d.prediction}")


def model_card(spec: ModelSpec, reports: list[dict], name: str) -> str:
    """The README.md of an exported model: every fact from `spec` (and the eval `reports`)."""
    p, c = spec.provenance, spec.conditioning
    kind = spec.model_kind.summary
    data = p.data + (f" {json.dumps(p.data_options)}" if p.data_options else "")
    sampling = spec.sampling
    weights = f"{p.weights} weights" if p.weights else "weights"
    process, facts = _process(spec)
    lines = [
        f"# {name}", "",
        f"A vidiff video diffusion model: {kind}, {_conditioning(spec)}.", "",
        "| | |", "|---|---|",
        f"| videos | {_shape(spec)}"
        + (f", {spec.preprocess.fps:g} fps" if spec.preprocess.fps else "") + " |",
        f"| trained on | {data or 'unknown'} (seed {p.data_seed})"
        + (f", {p.num_images} independent images per video" if p.num_images else "") + " |",
        f"| training steps | {p.step} ({weights}) |",
        f"| {process} | {facts} |",
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
