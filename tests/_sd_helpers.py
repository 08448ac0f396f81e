"""Tiny Stable-Diffusion-format folders for the tests (random weights, the real layout).

`write_tiny_sd` writes a whole pipeline root as diffusers' `save_pretrained` does:
model_index.json, unet/ (a UNet2DConditionModel), vae/ (an AutoencoderKL), text_encoder/ and
tokenizer/ (a CLIPTextModel and a real CLIP BPE tokenizer over a small vocabulary), and
scheduler/ (SD's scaled_linear schedule, eps).
"""

import json


def write_tiny_vae(root):
    """A pipeline root holding a tiny random diffusers AutoencoderKL in vae/ (4 latent
    channels, 2x downsampling); returns `root`."""
    import diffusers
    import torch

    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=4, sample_size=16, scaling_factor=0.18215)
    vae.save_pretrained(root / "vae")
    _index(root, vae=["diffusers", "AutoencoderKL"])
    return root


def _index(root, **parts):
    """model_index.json naming the parts written so far (and `parts`)."""
    file = root / "model_index.json"
    index = json.loads(file.read_text()) if file.is_file() else {
        "_class_name": "StableDiffusionPipeline"}
    index.update(parts)
    file.write_text(json.dumps(index))


def tiny_sd_unet_config(sd2: bool = False, text_dim: int = 32) -> dict:
    """A small UNet2DConditionModel config in SD 1's form (conv proj_in, one head count) or
    SD 2's (linear proj_in, heads per block, upcast_attention)."""
    return dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1 if sd2 else 2,
                block_out_channels=(32, 64, 64), norm_num_groups=16,
                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                  "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                cross_attention_dim=text_dim, attention_head_dim=[2, 4, 8] if sd2 else 8,
                use_linear_projection=sd2, upcast_attention=sd2)


def random_weights(model, seed: int = 0, std: float = 0.05):
    """`model` with every parameter moved by N(0, std^2) noise (diffusers zero-initialises
    some, which would hide their mapping)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return model


def write_tiny_sd(root, sd2: bool = False):
    """A whole tiny Stable Diffusion pipeline root (the module docstring); returns `root`."""
    import diffusers
    import torch

    write_tiny_vae(root)
    write_tiny_clip(root)
    torch.manual_seed(0)
    unet = random_weights(diffusers.UNet2DConditionModel(**tiny_sd_unet_config(sd2)))
    unet.save_pretrained(root / "unet")
    diffusers.DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                            prediction_type="epsilon").save_pretrained(root / "scheduler")
    _index(root, unet=["diffusers", "UNet2DConditionModel"],
           text_encoder=["transformers", "CLIPTextModel"],
           tokenizer=["transformers", "CLIPTokenizer"],
           scheduler=["diffusers", "DDPMScheduler"])
    return root


WORDS = ["a", "red", "green", "blue", "yellow", "ball", "balls", "two"]


def write_tiny_clip(root, width: int = 32):
    """text_encoder/ (a random 2-layer CLIPTextModel) and tokenizer/ (a real CLIP BPE
    tokenizer over a small vocabulary written here) in a pipeline root."""
    letters = sorted(set("".join(WORDS)))
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in letters + [c + "</w>" for c in letters] + [w + "</w>" for w in WORDS]:
        vocab.setdefault(token, len(vocab))
    merges = ["#version: 0.2"]
    for word in WORDS:  # merge each word left to right into one token
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append(f"{pieces[0]} {pieces[1]}")
            merged = pieces[0] + pieces[1]
            vocab.setdefault(merged, len(vocab))
            pieces = [merged] + pieces[2:]
    tok = root / "tokenizer"
    tok.mkdir(parents=True)
    (tok / "vocab.json").write_text(json.dumps(vocab))
    (tok / "merges.txt").write_text("\n".join(dict.fromkeys(merges)) + "\n")
    import torch
    import transformers

    tokenizer = transformers.CLIPTokenizer(str(tok / "vocab.json"), str(tok / "merges.txt"),
                                           model_max_length=77)
    tokenizer.save_pretrained(tok)
    torch.manual_seed(0)
    config = transformers.CLIPTextConfig(vocab_size=len(vocab), hidden_size=width,
                                         intermediate_size=37, num_hidden_layers=2,
                                         num_attention_heads=4, max_position_embeddings=77,
                                         bos_token_id=0, eos_token_id=1, pad_token_id=1)
    transformers.CLIPTextModel(config).save_pretrained(root / "text_encoder")
    return root


