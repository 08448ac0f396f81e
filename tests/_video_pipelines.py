"""Tiny Wan 2.1, LTX-Video and CogVideoX pipelines in diffusers' real folder format, built by
the tests (model_index.json and every subfolder: transformer, vae, text_encoder, tokenizer,
scheduler), with a real T5-style SentencePiece-Unigram tokenizer trained here. Random weights;
nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import torch
from _train_helpers import fill_zero_layers  # noqa: F401 (the benchmarks' too)

diffusers = __import__("diffusers")
transformers = __import__("transformers")

# the smallest VAE configs diffusers accepts with the released temporal factors (Wan,
# CogVideoX: 4; LTX-Video: 8) at a spatial factor of 4 (Wan, CogVideoX) or 8 (LTX-Video)
TINY_VAES = {
    "wan": ("AutoencoderKLWan", dict(
        base_dim=8, z_dim=4, dim_mult=[1, 1, 1], num_res_blocks=1,
        temperal_downsample=[True, True], latents_mean=[0.1, -0.2, 0.3, 0.0],
        latents_std=[1.5, 0.5, 2.0, 0.8], scale_factor_temporal=4, scale_factor_spatial=4)),
    "ltx": ("AutoencoderKLLTXVideo", dict(
        latent_channels=4, block_out_channels=(8, 8, 8),
        down_block_types=("LTXVideoDownBlock3D",) * 3, decoder_block_out_channels=(8, 8, 8),
        layers_per_block=(1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1),
        spatio_temporal_scaling=(True,) * 3, decoder_spatio_temporal_scaling=(True,) * 3,
        decoder_inject_noise=(False,) * 4, downsample_type=("conv",) * 3,
        upsample_residual=(False,) * 3, upsample_factor=(1,) * 3, patch_size=1,
        patch_size_t=1, scaling_factor=0.9, timestep_conditioning=True)),
    "cogvideox": ("AutoencoderKLCogVideoX", dict(
        block_out_channels=(8, 8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=4,
        down_block_types=("CogVideoXDownBlock3D",) * 3,
        up_block_types=("CogVideoXUpBlock3D",) * 3, temporal_compression_ratio=4,
        sample_height=16, sample_width=16, scaling_factor=0.7)),
}

TEXT_DIM = 16  # the tiny T5's width (the transformers' text width)
TRANSFORMERS = {
    "wan": ("WanTransformer3DModel", dict(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4,
        out_channels=4, text_dim=TEXT_DIM, freq_dim=16, ffn_dim=32, num_layers=2,
        rope_max_seq_len=32)),
    "ltx": ("LTXVideoTransformer3DModel", dict(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2,
        attention_head_dim=8, cross_attention_dim=16, num_layers=2,
        caption_channels=TEXT_DIM)),
    "cogvideox": ("CogVideoXTransformer3DModel", dict(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
        time_embed_dim=8, text_embed_dim=TEXT_DIM, num_layers=2, sample_width=8,
        sample_height=8, sample_frames=9, patch_size=2, temporal_compression_ratio=4,
        max_text_seq_length=226, use_rotary_positional_embeddings=True)),
}
SCHEDULERS = {  # as the released folders configure them
    "wan": ("FlowMatchEulerDiscreteScheduler", dict(shift=3.0)),
    "ltx": ("FlowMatchEulerDiscreteScheduler", dict(
        base_image_seq_len=1024, base_shift=0.95, max_image_seq_len=4096, max_shift=2.05,
        shift=1.0, shift_terminal=0.1, use_dynamic_shifting=True)),
    "cogvideox": ("CogVideoXDDIMScheduler", dict(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        prediction_type="v_prediction", rescale_betas_zero_snr=True, set_alpha_to_one=True,
        snr_shift_scale=3.0, steps_offset=0, timestep_spacing="trailing")),
}
PIPELINES = {"wan": "WanPipeline", "ltx": "LTXPipeline", "cogvideox": "CogVideoXPipeline"}
CAPTIONS = ["a red ball bounces", "two blue squares move left", "the cat walks slowly",
            "empty scene", "a video of waves", "a green circle falls"]


def tokenizer(folder: Path):
    """A T5-style tokenizer (SentencePiece Unigram, </s> appended, <pad> = 0) over the words
    and letters of CAPTIONS, saved to `folder` as transformers writes one. Its pieces and
    scores are written out, not trained: Unigram training orders ties differently from run
    to run, and the fixture must be the same every time."""
    from tokenizers import SentencePieceUnigramTokenizer
    from tokenizers.processors import TemplateProcessing

    words = sorted({w for c in CAPTIONS for w in c.split()})
    letters = sorted({ch for c in CAPTIONS for ch in c if ch != " "})
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(f"\u2581{w}", -2.0) for w in words] + [("\u2581", -4.0)]
    vocab += [(ch, -6.0) for ch in letters]  # any other word: letter by letter
    sp = SentencePieceUnigramTokenizer(vocab=vocab)
    sp.post_processor = TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                           special_tokens=[("</s>", 1)])
    tok = transformers.T5TokenizerFast(tokenizer_object=sp._tokenizer, eos_token="</s>",
                                       pad_token="<pad>", unk_token="<unk>", extra_ids=0)
    tok.save_pretrained(folder)
    return tok


def text_encoder(family: str, vocab: int):
    """A tiny UMT5 (Wan) or T5 (LTX, CogVideoX) encoder of width TEXT_DIM."""
    kwargs = dict(vocab_size=vocab, d_model=TEXT_DIM, d_kv=8, d_ff=32, num_layers=2,
                  num_heads=2, relative_attention_num_buckets=8, dropout_rate=0.0)
    if family == "wan":
        return transformers.UMT5EncoderModel(transformers.UMT5Config(**kwargs))
    return transformers.T5EncoderModel(transformers.T5Config(**kwargs))


def write_pipeline(root: Path, family: str, seed: int = 0) -> Path:
    """A tiny `family` pipeline saved at `root` (diffusers' save_pretrained)."""
    with torch.random.fork_rng(devices=[]):  # diffusers' inits draw from the global RNG
        torch.manual_seed(seed)
        return _write(root, family, seed)


def _write(root: Path, family: str, seed: int) -> Path:
    tok = tokenizer(root / "_tokenizer")
    vae_cls, vae_cfg = TINY_VAES[family]
    net_cls, net_cfg = TRANSFORMERS[family]
    sched_cls, sched_cfg = SCHEDULERS[family]
    parts = dict(tokenizer=tok, text_encoder=text_encoder(family, len(tok)).eval(),
                 transformer=getattr(diffusers, net_cls)(**net_cfg).eval(),
                 vae=getattr(diffusers, vae_cls)(**vae_cfg).eval(),
                 scheduler=getattr(diffusers, sched_cls)(**sched_cfg))
    g = torch.Generator().manual_seed(seed)
    for module in (parts["transformer"], parts["vae"]):
        fill_zero_layers(module, g)
    getattr(diffusers, PIPELINES[family])(**parts).save_pretrained(root)
    return root


def reference(root: Path, family: str):
    """diffusers' own pipeline of the folder at `root` (fp32, CPU)."""
    return getattr(diffusers, PIPELINES[family]).from_pretrained(root, local_files_only=True)
