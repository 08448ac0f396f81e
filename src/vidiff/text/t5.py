"""The frozen T5-family text encoder of a Wan 2.1, LTX-Video or CogVideoX pipeline folder.

>>> text = T5TextEncoder("Wan2.1-T2V-1.3B-Diffusers")      # text_encoder/ + tokenizer/
>>> emb, mask = text(["a red ball bounces"])               # (1, 512, 4096), (1, 512)

Each family encodes a prompt its own way, and vidiff follows its pipeline exactly (the
family is read from the root's model_index.json ``_class_name``):

| family    | pipeline            | tokens | encoder sees the mask | padded positions       |
|-----------|---------------------|--------|-----------------------|------------------------|
| wan       | `WanPipeline`       | 512    | yes                   | zeroed (``u[:len]``)   |
| ltx       | `LTXPipeline`       | 128    | no                    | kept (masked later)    |
| cogvideox | `CogVideoXPipeline` | 226    | no                    | kept, attended         |

(diffusers/pipelines/wan/pipeline_wan.py ``_get_t5_prompt_embeds``; ltx/pipeline_ltx.py and
cogvideo/pipeline_cogvideox.py, the functions of the same name.) Captions are padded and cut
to the family's length; Wan's prompts are cleaned first (``prompt_clean``: ftfy when
installed, HTML unescaping, whitespace). The returned mask is the tokenizer's (True: a real
token); what a transformer does with it is its kind's business. transformers is an optional
dependency; nothing is downloaded.
"""

from __future__ import annotations

import functools
import html
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from vidiff.utils.config_io import model_index_class, read_json
from vidiff.utils.quiet import quiet_loading

__all__ = ["T5_STYLES", "T5Style", "T5TextEncoder", "is_t5_root", "load_t5", "t5_style_of"]


@dataclass(frozen=True)
class T5Style:
    """How one pipeline family encodes prompts (the module docstring's table)."""

    family: str  # wan | ltx | cogvideox
    max_tokens: int  # the pipeline's max_sequence_length
    encoder_mask: bool  # the T5 encoder is given the attention mask
    zero_padding: bool  # the embeddings past each prompt's length are set to 0
    clean: bool  # prompts go through the pipeline's prompt_clean
    padding_read: bool = False  # the transformer reads the padding's embeddings (CogVideoX)


T5_STYLES = {
    "WanPipeline": T5Style("wan", 512, encoder_mask=True, zero_padding=True, clean=True),
    "LTXPipeline": T5Style("ltx", 128, encoder_mask=False, zero_padding=False, clean=False),
    "CogVideoXPipeline": T5Style("cogvideox", 226, encoder_mask=False, zero_padding=False,
                                 clean=False, padding_read=True),
}


def t5_style_of(root: str | os.PathLike) -> T5Style | None:
    """The `T5Style` of a pipeline root (by model_index.json), None for any other folder."""
    return T5_STYLES.get(model_index_class(root))


def is_t5_root(path: str | os.PathLike) -> bool:
    """True for a Wan / LTX-Video / CogVideoX pipeline root with text_encoder/, tokenizer/."""
    path = Path(path)
    return (t5_style_of(path) is not None and (path / "text_encoder" / "config.json").is_file()
            and (path / "tokenizer").is_dir())


def _clean(text: str) -> str:
    """WanPipeline's prompt_clean: ftfy (when installed), HTML unescaped twice, whitespace
    runs to one space, stripped."""
    try:
        import ftfy  # optional, as in diffusers
        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


class T5TextEncoder:
    """Captions -> (text_emb (B, L, D) float32, text_mask (B, L) bool) with L the family's
    length (see the module docstring); frozen, no gradients. `free()` drops the weights."""

    def __init__(self, root: str | os.PathLike):
        try:
            import transformers  # optional dependency
        except ImportError:
            raise ImportError("a T5 text encoder needs transformers: pip install "
                              "'vidiff[video]' (after torch, under the torch "
                              "constraint)") from None
        self.directory = Path(root)
        style = t5_style_of(self.directory)
        if style is None or not is_t5_root(self.directory):
            raise ValueError(f"{str(root)!r} is not a Wan / LTX-Video / CogVideoX pipeline root "
                             f"with text_encoder/ and tokenizer/ (model_index.json)")
        self.style = style
        config = read_json(self.directory / "text_encoder" / "config.json")
        arch = (config.get("architectures") or ["T5EncoderModel"])[0]
        cls = getattr(transformers, arch, None)
        if cls is None or "Encoder" not in arch:
            raise ValueError(f"{str(self.directory / 'text_encoder')!r}: {arch} is not a T5 "
                             f"encoder model (T5EncoderModel, UMT5EncoderModel)")
        with quiet_loading():
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(
                self.directory / "tokenizer", local_files_only=True)
            self.model = cls.from_pretrained(self.directory / "text_encoder",
                                             local_files_only=True).eval()
        self.model.requires_grad_(False)
        self.dim = int(self.model.config.d_model)
        self.max_tokens = style.max_tokens

    def tokens(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids (B, L), mask (B, L) bool) as the family's pipeline tokenizes."""
        texts = [_clean(c) for c in captions] if self.style.clean else list(captions)
        out = self.tokenizer(texts, padding="max_length", max_length=self.max_tokens,
                             truncation=True, add_special_tokens=True,
                             return_attention_mask=True, return_tensors="pt")
        return out.input_ids, out.attention_mask.bool()

    @torch.no_grad()
    def __call__(self, captions: list[str], device: torch.device | str = "cpu"):
        if self.model is None:
            raise RuntimeError("this text encoder was freed (its embeddings were cached)")
        ids, mask = self.tokens(captions)
        ids, mask = ids.to(device), mask.to(device)
        self.model.to(device)
        given = mask.long() if self.style.encoder_mask else None
        emb = self.model(ids, attention_mask=given).last_hidden_state.float()  # (B, L, D)
        if self.style.zero_padding:  # WanPipeline: u[:seq_len] padded with zeros
            emb = emb * mask[..., None]
        return emb, mask

    def free(self) -> None:
        """Drop the encoder's weights (a 5-11 GB model must not stay through training)."""
        self.model = None


@functools.lru_cache(maxsize=1)
def _load(root: Path) -> T5TextEncoder:
    return T5TextEncoder(root)


def load_t5(root: str | os.PathLike) -> T5TextEncoder:
    """The `T5TextEncoder` of a pipeline root, loaded once for the process (again after
    `T5TextEncoder.free`)."""
    path = Path(root).expanduser().resolve()
    if _load(path).model is None:
        _load.cache_clear()
    return _load(path)
