"""A dependency-free text encoder for captions: each word maps to a fixed random vector.

`HashTextEncoder` needs no weights: the embedding of a word is a unit-variance Gaussian vector
drawn from a generator seeded by the word's SHA-256, so every process and machine encodes a
caption the same way. It suits the small, fixed vocabularies of the synthetic datasets'
captions ("two red balls"); the U-Net's text conditioner learns what the words mean.
"""

from __future__ import annotations

import hashlib
import re

import torch

__all__ = ["HashTextEncoder"]


class HashTextEncoder:
    """Captions -> (text_emb (B, L, D) float32, text_mask (B, L) bool)."""

    def __init__(self, dim: int = 64, max_tokens: int = 16):
        self.dim, self.max_tokens = dim, max_tokens
        self._cache: dict[str, torch.Tensor] = {}

    def tokens(self, caption: str) -> list[str]:
        """The caption's lowercase words, cut to `max_tokens`."""
        return re.findall(r"[a-z0-9]+", caption.lower())[: self.max_tokens]

    def word(self, token: str) -> torch.Tensor:
        """The (D,) embedding of one word."""
        if token not in self._cache:
            seed = int.from_bytes(hashlib.sha256(token.encode()).digest()[:8], "little")
            g = torch.Generator().manual_seed(seed & (2**63 - 1))
            # a fixed word vector hashed from the token (an embedding, not diffusion noise)
            self._cache[token] = torch.randn(self.dim, generator=g)  # not diffusion noise
        return self._cache[token]

    def __call__(self, captions: list[str], device: torch.device | str = "cpu"):
        batch = len(captions)
        emb = torch.zeros(batch, self.max_tokens, self.dim)
        mask = torch.zeros(batch, self.max_tokens, dtype=torch.bool)
        for b, caption in enumerate(captions):
            for i, token in enumerate(self.tokens(caption)):
                emb[b, i] = self.word(token)
                mask[b, i] = True
        mask[:, 0] |= ~mask.any(1)  # an empty caption: one (zero) token so attention has a key
        return emb.to(device), mask.to(device)
