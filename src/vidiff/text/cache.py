"""Caption embeddings computed once, kept on disk, and the text encoder freed.

>>> text = TextCache.build(load_t5(root), captions, "runs/wan/text_cache")
>>> emb, mask = text(["a red ball"])          # exactly the encoder's output, from the cache

A video model's T5 encoder holds 5-11 GB (UMT5-XXL, T5-XXL) that training does not need
once every caption of the data is encoded: `TextCache.build` encodes the distinct captions
(and the empty prompt) in batches, writes their tokens into one safetensors file
(memory-mapped on read) with an index, and the caller frees the encoder. Each caption keeps
only the tokens its family's transformer reads: Wan zeroes, and LTX-Video masks, every
position past the prompt, so those keep the prompt's tokens and the rest is zeros again on
read; CogVideoX attends to the padding's embeddings too, so it keeps all of them
(`T5Style.zero_padding`, `T5Style.encoder_mask`). The cache's fingerprint (the encoder's
folder, weights' sizes and times, style and length) is checked on reuse; a cache of another
encoder is rebuilt, never read.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

__all__ = ["TextCache"]

TOKENS, INDEX = "tokens.safetensors", "index.json"
FORMAT = "vidiff-text-cache-1"
BATCH = 16  # captions per encoder call while building


def _fingerprint(encoder) -> dict:
    folder = Path(encoder.directory).resolve()
    files = sorted((folder / "text_encoder").glob("*.safetensors")) + sorted(
        (folder / "tokenizer").glob("*"))
    stats = [[f.name, f.stat().st_size, int(f.stat().st_mtime)] for f in files if f.is_file()]
    return {"format": FORMAT, "folder": str(folder), "files": stats,
            "style": encoder.style.family, "max_tokens": encoder.max_tokens}


def _key(caption: str) -> str:
    return hashlib.sha1(caption.encode()).hexdigest()


class TextCache:
    """The cached embeddings of a set of captions (see the module docstring); called like the
    encoder it replaces: captions -> (text_emb (B, L, D) float32, text_mask (B, L) bool)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        meta = json.loads((self.folder / INDEX).read_text())
        self.fingerprint, self.index = meta["fingerprint"], meta["captions"]
        self.max_tokens, self.dim = int(meta["max_tokens"]), int(meta["dim"])
        self.style = meta["fingerprint"]["style"]
        self._file = safe_open(str(self.folder / TOKENS), framework="pt")  # memory-mapped

    @classmethod
    def build(cls, encoder, captions: Iterable[str], folder: str | os.PathLike,
              progress=None) -> TextCache:
        """The cache of `captions` (and "") by `encoder` (a `vidiff.text.t5.T5TextEncoder`)
        at `folder`: reused when its fingerprint and captions match, else (re)built."""
        folder = Path(folder)
        wanted = sorted(set(captions) | {""})
        fingerprint = _fingerprint(encoder)
        if (folder / INDEX).is_file() and (folder / TOKENS).is_file():
            try:
                cache = cls(folder)
            except (OSError, ValueError, KeyError):
                cache = None
            if cache is not None and cache.fingerprint == fingerprint and all(
                    _key(c) in cache.index for c in wanted):
                return cache
        folder.mkdir(parents=True, exist_ok=True)
        index, chunks, offset = {}, [], 0
        for start in range(0, len(wanted), BATCH):
            batch = wanted[start:start + BATCH]
            emb, mask = encoder(batch)  # (b, L, D), (b, L)
            for caption, e, m in zip(batch, emb, mask, strict=True):
                real = int(m.sum())
                keep = e.shape[0] if encoder.style.padding_read else real
                chunks.append(e[:keep].float().contiguous())
                index[_key(caption)] = [offset, keep, real]
                offset += keep
            if progress is not None:
                progress(min(start + BATCH, len(wanted)), len(wanted))
        tmp = folder / (TOKENS + ".tmp")
        save_file({"tokens": torch.cat(chunks)}, str(tmp))
        os.replace(tmp, folder / TOKENS)
        meta = {"fingerprint": fingerprint, "captions": index, "max_tokens": encoder.max_tokens,
                "dim": encoder.dim}
        (folder / (INDEX + ".tmp")).write_text(json.dumps(meta))
        os.replace(folder / (INDEX + ".tmp"), folder / INDEX)
        return cls(folder)

    def __len__(self) -> int:
        return len(self.index)

    def __call__(self, captions: list[str], device: torch.device | str = "cpu"):
        emb = torch.zeros(len(captions), self.max_tokens, self.dim)
        mask = torch.zeros(len(captions), self.max_tokens, dtype=torch.bool)
        rows = self._file.get_slice("tokens")
        for i, caption in enumerate(captions):
            entry = self.index.get(_key(caption))
            if entry is None:
                raise KeyError(f"caption {caption!r} is not in the text cache {self.folder} "
                               f"(its encoder was freed after encoding the data's captions)")
            offset, keep, real = entry
            emb[i, :keep] = rows[offset:offset + keep]
            mask[i, :real] = True
        return emb.to(device), mask.to(device)
