"""A Stable Diffusion pipeline's frozen CLIP text encoder, through transformers.

>>> text = ClipTextEncoder("stable-diffusion-v1-5")        # a root with text_encoder/, tokenizer/
>>> emb, mask = text(["two red balls"])                    # (1, 77, 768), (1, 77) all True

As SD's pipelines use it: captions are tokenized by the pipeline's `CLIPTokenizer`, padded
(and cut) to its ``model_max_length`` (77), and the context of the cross-attention is the
text model's last hidden state over all 77 positions (SD 2's checkpoints already leave out
the text model's last layer; ``skip = 1`` takes the layer before the last, "clip skip",
through the final layer norm as diffusers does). Every position is attended (the mask is all
True), padding included, as SD was trained. transformers is an optional dependency
(``pip install 'vidiff[latent]'``); nothing is downloaded.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import torch

from vidiff.utils.quiet import quiet_loading

__all__ = ["ClipTextEncoder", "is_clip_root", "load_clip"]


def _parts(path: Path) -> tuple[Path, Path]:
    return path / "text_encoder", path / "tokenizer"


def is_clip_root(path: str | os.PathLike) -> bool:
    """True for a folder holding ``text_encoder/`` (a CLIP text model) and ``tokenizer/``."""
    model, tokenizer = _parts(Path(path))
    config = model / "config.json"
    if not (config.is_file() and tokenizer.is_dir()):
        return False
    try:
        raw = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    return raw.get("model_type") == "clip_text_model" or "CLIPTextModel" in str(
        raw.get("architectures"))


class ClipTextEncoder:
    """Captions -> (text_emb (B, L, D) float32, text_mask (B, L) bool), L the tokenizer's
    maximum length; frozen, no gradients (see the module docstring)."""

    def __init__(self, root: str | os.PathLike, skip: int = 0):
        try:
            from transformers import CLIPTextModel, CLIPTokenizer  # optional dependency
        except ImportError:
            raise ImportError("a CLIP text encoder needs transformers: pip install "
                              "'vidiff[latent]' (after torch, under the torch "
                              "constraint)") from None
        self.directory = Path(root)
        if not is_clip_root(self.directory):
            raise ValueError(f"{str(root)!r} holds no CLIP text encoder (text_encoder/ with a "
                             f"CLIPTextModel config and tokenizer/)")
        model_dir, tokenizer_dir = _parts(self.directory)
        with quiet_loading():
            self.tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
            self.model = CLIPTextModel.from_pretrained(model_dir, local_files_only=True).eval()
        self.model.requires_grad_(False)
        self.dim = int(self.model.config.hidden_size)
        self.max_tokens = int(self.tokenizer.model_max_length)
        self.skip = int(skip)

    def ids(self, captions: list[str]) -> torch.Tensor:
        """Token ids (B, L) of `captions`, padded and cut to L = `max_tokens`."""
        return self.tokenizer(list(captions), padding="max_length", max_length=self.max_tokens,
                              truncation=True, return_tensors="pt").input_ids

    @torch.no_grad()
    def __call__(self, captions: list[str], device: torch.device | str = "cpu"):
        ids = self.ids(captions).to(device)
        self.model.to(device)
        if self.skip == 0:
            hidden = self.model(ids).last_hidden_state
        else:  # the layer `skip` before the last, through the final layer norm
            states = self.model(ids, output_hidden_states=True).hidden_states
            hidden = _final_norm(self.model)(states[-(self.skip + 1)])
        mask = torch.ones(ids.shape, dtype=torch.bool, device=ids.device)
        return hidden.float(), mask


@functools.lru_cache(maxsize=1)
def _load_clip(root: Path) -> ClipTextEncoder:
    return ClipTextEncoder(root)


def load_clip(root: str | os.PathLike) -> ClipTextEncoder:
    """The `ClipTextEncoder` of a pipeline root, loaded once for the process: a run asks for
    it twice (the captions' encoder, and the U-Net's null text from the empty prompt), and
    CLIP-L's weights are half a gigabyte."""
    return _load_clip(Path(root).expanduser().resolve())


def _final_norm(model) -> torch.nn.Module:
    """The final layer norm of a CLIPTextModel (under .text_model before transformers 5)."""
    inner = getattr(model, "text_model", model)
    return inner.final_layer_norm
