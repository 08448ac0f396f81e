"""Wan 2.1, LTX-Video and CogVideoX: tiny pipelines in diffusers' folder format
(tests/_video_pipelines.py) sampled by vidiff equal diffusers' own pipelines for the same
initial latents and prompt (fp32), with and without guidance; a LoRA run exports adapters
that diffusers' ``load_lora_weights`` reads back to the same samples, and ``--merge`` too."""

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")
import _video_pipelines as vp  # noqa: E402

from vidiff import Pipeline  # noqa: E402
from vidiff.cli import main  # noqa: E402
from vidiff.modelio.export import export_model  # noqa: E402

SAMPLER = {"wan": "euler", "ltx": "euler", "cogvideox": "ddim"}
PROMPT = ["a red ball bounces"]
SIZE = dict(num_frames=9, height=32, width=32)
BOUND = 1e-5  # fp32: a few ulps of O(1) latents over 4 steps of 2-block transformers


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("video_pipelines")
    return {f: vp.write_pipeline(base / f, f) for f in vp.PIPELINES}


def _theirs(ref, family, x_T, clip, guidance):
    lat = {"ltx": lambda x: ref._pack_latents(x, 1, 1),
           "cogvideox": lambda x: x.transpose(1, 2)}.get(family, lambda x: x)(x_T)
    out = ref(prompt=PROMPT, num_inference_steps=4, guidance_scale=guidance, latents=lat,
              output_type="latent", **SIZE).frames
    if family == "ltx":
        return ref._unpack_latents(out, *clip[1:], 1, 1)
    return out.transpose(1, 2) if family == "cogvideox" else out


@pytest.mark.parametrize("family", list(vp.PIPELINES))
@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_sampling_equals_the_diffusers_pipeline(roots, family, guidance):
    pipe = Pipeline.from_pretrained(roots[family])
    ref = vp.reference(roots[family], family)
    clip = pipe.clip_for(**SIZE)
    x_T = torch.randn(1, *clip, generator=torch.Generator().manual_seed(1))
    ours = pipe(captions=PROMPT, sampler=SAMPLER[family], steps=4, guidance_scale=guidance,
                latents=x_T, output_type="latent", **SIZE)
    theirs = _theirs(ref, family, x_T, clip, guidance)
    assert (ours - theirs).abs().max() < BOUND * theirs.abs().max()


def test_a_frame_count_off_the_rule_is_named(roots):
    pipe = Pipeline.from_pretrained(roots["wan"])
    with pytest.raises(ValueError, match=r"1 \+ 4k frames \(nearest: 5 or 9\)"):
        pipe.clip_for(8, 32, 32)


@pytest.fixture(scope="module")
def wan_run(roots, tmp_path_factory):
    """A LoRA run of the tiny Wan on 9 x 32 x 32 clips (3 steps)."""
    run = tmp_path_factory.mktemp("wan_run") / "run"
    code = main(["train", "--out", str(run), "--set", "model.kind=wan",
                 f"model.init_from={roots['wan']}", "diffusion.process=flow",
                 "sample.sampler=euler", "data.use_captions=true", "data.frames=9",
                 "data.size=32", "data.batch_size=2", "data.num_videos=8", "train.steps=3",
                 "train.lr=0.01", "train.lora.rank=4", "prior.name=progressive",
                 "train.sample_every=0", "sample.steps=2", "train.progress=false",
                 "train.ema_decay=0"])
    assert code == 0 and (run / "text_cache" / "index.json").is_file()
    return run


def test_a_lora_run_round_trips_through_diffusers_loader(roots, wan_run, tmp_path):
    run = wan_run
    out, merged = tmp_path / "export", tmp_path / "merged"
    export_model(run, out)
    export_model(run, merged, merge=True)
    assert (out / "pytorch_lora_weights.safetensors").is_file()
    assert not (merged / "pytorch_lora_weights.safetensors").exists()
    clip = Pipeline.from_pretrained(out).clip_for(**SIZE)
    x_T = torch.randn(1, *clip, generator=torch.Generator().manual_seed(2))
    call = dict(captions=PROMPT, sampler="euler", steps=4, guidance_scale=1.0, latents=x_T,
                output_type="latent", **SIZE)
    ours = Pipeline.from_pretrained(out)(**call)
    base = Pipeline.from_pretrained(roots["wan"])(**call)
    ref = vp.reference(roots["wan"], "wan")
    ref.load_lora_weights(out)
    theirs = _theirs(ref, "wan", x_T, clip, 1.0)
    assert (ours - base).abs().max() > 100 * BOUND  # the adapters changed the model
    assert (ours - theirs).abs().max() < BOUND * theirs.abs().max()
    assert (Pipeline.from_pretrained(merged)(**call) - ours).abs().max() < BOUND * 4


def test_the_wan_lora_recipe_trains_under_its_prior_and_buckets(roots, tmp_path, capsys):
    """configs/finetune_wan_lora.toml at test size: buckets of a folder of captioned videos,
    the root's VAE and UMT5, LoRA on the attention projections, the progressive prior."""
    import json
    from pathlib import Path

    import numpy as np

    from vidiff.io import write_video

    data = tmp_path / "videos"
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(40, 56), (56, 40), (36, 60)]):  # two landscape, one portrait
        clip = torch.from_numpy(rng.uniform(-1, 1, (3, 12, h, w))).float()
        write_video(data / f"v{i}.mp4", clip, fps=8)
        (data / f"v{i}.txt").write_text(f"clip number {i}")
    config = Path(__file__).resolve().parents[1] / "configs" / "finetune_wan_lora.toml"
    run = tmp_path / "run"
    assert main(["train", "-c", str(config), "--init-from", str(roots["wan"]), "--data",
                 str(data), "--out", str(run), "--steps", "2", "--set",
                 "data.buckets=[[9,32,48],[9,48,32]]", "data.fps=null", "train.precision=fp32",
                 "train.lora.rank=4", "train.sample_every=0", "train.ckpt_every=0",
                 "train.progress=false", "train.threads=1", "train.warmup=1"]) == 0
    buckets = json.loads((run / "buckets.json").read_text())["buckets"]
    assert [(b["height"], b["width"], b["videos"]) for b in buckets] == [(32, 48, 2),
                                                                         (48, 32, 1)]
    spec = Pipeline.from_pretrained(run).spec
    assert spec.lora.rank == 4 and spec.lora.targets == ["to_q", "to_k", "to_v", "to_out.0"]
    assert spec.prior.name == "progressive" and spec.prior.params == {"alpha": 2.0}
    assert spec.conditioning.text_encoder.name == str(roots["wan"])
    banner = [line for line in capsys.readouterr().out.splitlines() if "data:" in line][0]
    assert "trained: LoRA rank 4 on 16 layers)" in banner, banner  # 2 blocks x 2 attn x 4


def test_image_to_video_starts_with_the_image_and_follows_the_caption(wan_run, tmp_path, capsys):
    """`vidiff extend ROOT --input first_frame.png --caption ...`: the causal VAE encodes the
    image alone, the sampled clip keeps that latent frame exactly, so its decoded first frame is
    the image's VAE reconstruction; the caption steers the rest; frame counts are video
    frames, checked against the VAE's rule."""
    import numpy as np
    from _train_helpers import cli_error

    from vidiff.io import read_video, write_video

    image = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    png = tmp_path / "first.png"
    write_video(png, image, fps=8)
    outs = {}
    for caption in ("a red ball bounces", "a blue cube spins"):
        outs[caption] = out = tmp_path / f"{caption[2:5]}.npy"
        assert main(["extend", str(wan_run), "--input", str(png), "--caption", caption,
                     "--frames", "9", "--steps", "2", "--guidance-scale", "3", "--out",
                     str(out), "--threads", "1"]) == 0
    a, b = (torch.from_numpy(np.load(p))[0] for p in outs.values())  # (F, H, W, C) uint8
    assert a.shape == (9, 32, 32, 3)
    pipe = Pipeline.from_pretrained(wan_run)
    pixels = read_video(png).permute(3, 0, 1, 2)[None].float() / 127.5 - 1  # (1, C, 1, H, W)
    again = pipe.decode(pipe.encode(pixels))[0, :, 0]  # (C, H, W): the VAE's reconstruction
    want = ((again.clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0)
    assert (a[0].float() - want).abs().max() <= 1 and (b[0].float() - want).abs().max() <= 1
    # same seed, same image: only the caption differs (a tiny model's text effect is small)
    assert not torch.equal(a[1:], b[1:])
    sampled = tmp_path / "s.npy"
    assert main(["sample", str(wan_run), "--caption", "a red ball bounces", "--negative-prompt",
                 "blurry", "-n", "1", "--steps", "2", "--out", str(sampled)]) == 0
    assert np.load(sampled).shape == (1, 9, 32, 32, 3)
    err = cli_error(capsys, ["extend", str(wan_run), "--input", str(png), "--frames", "8"])
    assert "--frames 8: 8 frames do not fit the Wan VAE" in err and "nearest: 5 or 9" in err
    err = cli_error(capsys, ["extend", str(wan_run), "--input", str(png),
                             "--guidance-scale", "3"])
    assert "--guidance-scale 3 needs --class or --caption" in err
    clip = tmp_path / "twelve.mp4"  # 12 frames: off the 1 + 4k rule, named before encoding
    write_video(clip, torch.rand(3, 12, 32, 32, generator=torch.Generator().manual_seed(1)),
                fps=8)
    err = cli_error(capsys, ["extend", str(wan_run), "--input", str(clip), "--frames", "17"])
    assert f"--input {str(clip)!r}: 12 frames do not fit the Wan VAE" in err
    err = cli_error(capsys, ["extend", str(wan_run), "--input", str(png), "--context", "3",
                             "--frames", "4"])
    assert "--context 3: each latent frame after the first holds 4 frames" in err
    err = cli_error(capsys, ["interpolate", str(wan_run), "--input", str(png)])
    assert "each latent frame of this model's video VAE holds 4 frames" in err


def test_temporal_only_training_is_refused_for_a_full_attention_kind(roots):
    from vidiff.train.config import load_run_config
    from vidiff.utils.config_io import ConfigError

    with pytest.raises(ConfigError, match="has no temporal layers apart; train adapters"):
        load_run_config(None, ["model.kind=wan", f"model.init_from={roots['wan']}",
                               "diffusion.process=flow", "sample.sampler=euler",
                               "data.use_captions=true", "data.frames=9", "data.size=32",
                               "train.trainable=temporal"])


def test_a_lora_run_resumes_with_its_adapters(roots, wan_run):
    """Two more steps on the LoRA run: only the adapters move, the frozen base stays the
    root's transformer."""
    from safetensors.torch import load_file

    from vidiff.modelio.checkpoint import list_checkpoints

    before = load_file(list_checkpoints(wan_run)[-1] / "model.safetensors")
    assert main(["train", "--out", str(wan_run), "--steps", "5"]) == 0
    after = load_file(list_checkpoints(wan_run)[-1] / "model.safetensors")
    moved = {k for k in after if not torch.equal(after[k], before[k])}
    assert moved and all(".lora_" in k for k in moved)
    base = Pipeline.from_pretrained(roots["wan"]).model.state_dict()
    for key, value in after.items():
        if ".lora_" not in key:
            name = key.replace(".base_layer.", ".")
            assert torch.equal(value, base[name].to(value.dtype)), key


def test_info_describes_a_lora_run_and_names_a_root(roots, wan_run, capsys):
    from _train_helpers import cli_error

    assert main(["info", str(wan_run)]) == 0
    out = capsys.readouterr().out
    assert f"model        wan, from {roots['wan']}" in out
    assert "lora         rank 4, alpha 4, on to_q, to_k, to_v, to_out.0" in out
    assert f"text         {roots['wan']} (the pipeline's T5, width 16" in out
    err = cli_error(capsys, ["info", str(roots["wan"])])
    assert "is a diffusers WanPipeline root, not a vidiff model: `vidiff sample" in err
