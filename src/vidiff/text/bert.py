"""A BERT encoder in plain torch that loads Hugging Face `BertModel` checkpoints.

Reads `config.json` (hidden_size, num_hidden_layers, num_attention_heads, intermediate_size,
max_position_embeddings, type_vocab_size, vocab_size, layer_norm_eps, hidden_act = gelu) and
`model.safetensors` with BERT's key names (`embeddings.word_embeddings.weight`,
`encoder.layer.0.attention.self.query.weight`, ...; a `bert.` prefix is dropped, the pooler
and `position_ids` are ignored). The math is BertModel's (Devlin et al. 2019) in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from vidiff.utils.config_io import read_json


@dataclass(frozen=True)
class BertConfig:
    """The fields of a Hugging Face BERT config.json that the encoder uses."""

    vocab_size: int = 30522  # WordPiece vocabulary
    hidden_size: int = 384  # token width D
    num_hidden_layers: int = 6  # transformer layers
    num_attention_heads: int = 12  # heads per layer
    intermediate_size: int = 1536  # MLP width
    max_position_embeddings: int = 512  # longest input
    type_vocab_size: int = 2  # segment ids
    layer_norm_eps: float = 1e-12  # LayerNorm epsilon
    hidden_act: str = "gelu"  # only gelu (erf) is supported

    @classmethod
    def from_file(cls, path: str | Path) -> BertConfig:
        """From a config.json; other keys are ignored."""
        data = read_json(path)
        config = cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})
        if config.hidden_act != "gelu":
            raise ValueError(f"{path}: hidden_act {config.hidden_act!r} is not supported (gelu)")
        return config


class BertLayer(nn.Module):
    """Self-attention and MLP, each followed by residual + LayerNorm (post-norm BERT)."""

    def __init__(self, c: BertConfig):
        super().__init__()
        d = c.hidden_size
        self.heads = c.num_attention_heads
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.attn_out, self.attn_norm = nn.Linear(d, d), nn.LayerNorm(d, eps=c.layer_norm_eps)
        self.mlp_in = nn.Linear(d, c.intermediate_size)
        self.mlp_out = nn.Linear(c.intermediate_size, d)
        self.mlp_norm = nn.LayerNorm(d, eps=c.layer_norm_eps)

    def _split(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)  # (B, heads, L, Dh)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        """x (B, L, D); bias (B, 1, 1, L) additive attention mask."""
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, heads, L, Dh)
        att = att.transpose(1, 2).reshape(x.shape)  # (B, L, D)
        x = self.attn_norm(x + self.attn_out(att))
        return self.mlp_norm(x + self.mlp_out(F.gelu(self.mlp_in(x))))


class BertEncoder(nn.Module):
    """Token ids (B, L) and mask (B, L) -> last hidden states (B, L, D)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        c = self.config = config
        self.word = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.layers = nn.ModuleList(BertLayer(c) for _ in range(c.num_hidden_layers))

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.word(ids) + self.position(pos) + self.token_type(torch.zeros_like(ids))
        x = self.norm(x)
        bias = torch.zeros(mask.shape, dtype=x.dtype, device=x.device)
        bias = bias.masked_fill(~mask, torch.finfo(x.dtype).min)[:, None, None, :]  # (B,1,1,L)
        for layer in self.layers:
            x = layer(x, bias)
        return x


_LAYER_KEYS = {  # BertLayer attribute -> Hugging Face name under encoder.layer.{i}.
    "query": "attention.self.query", "key": "attention.self.key",
    "value": "attention.self.value", "attn_out": "attention.output.dense",
    "attn_norm": "attention.output.LayerNorm", "mlp_in": "intermediate.dense",
    "mlp_out": "output.dense", "mlp_norm": "output.LayerNorm",
}
_EMBED_KEYS = {"word": "word_embeddings", "position": "position_embeddings",
               "token_type": "token_type_embeddings", "norm": "LayerNorm"}


def hf_key(name: str) -> str:
    """The Hugging Face BertModel key of a `BertEncoder` state-dict key."""
    parts = name.split(".")
    if parts[0] == "layers":
        return f"encoder.layer.{parts[1]}.{_LAYER_KEYS[parts[2]]}.{parts[3]}"
    return f"embeddings.{_EMBED_KEYS[parts[0]]}.{parts[1]}"


def load_bert(directory: str | Path) -> BertEncoder:
    """The `BertEncoder` of a Hugging Face model directory (config.json, model.safetensors),
    frozen, in eval mode."""
    directory = Path(directory)
    model = BertEncoder(BertConfig.from_file(directory / "config.json"))
    tensors = load_file(directory / "model.safetensors")
    tensors = {k.removeprefix("bert."): v for k, v in tensors.items()}
    state, missing = {}, []
    for name in model.state_dict():
        key = hf_key(name)
        if key in tensors:
            state[name] = tensors[key].float()
        else:
            missing.append(key)
    if missing:
        raise ValueError(f"{directory / 'model.safetensors'} is not a BERT checkpoint: it lacks "
                         f"{', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
    model.load_state_dict(state)
    return model.eval().requires_grad_(False)
